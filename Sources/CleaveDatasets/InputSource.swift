import CleaveSupport
import CleaveTensor

/// Where an agent's requests come from: the inputs a board would see.
public enum InputSource: Sendable {
    /// Fashion-MNIST test images, in order, with labels (accuracy is reported).
    case fashionMNIST(FashionMNIST)
    /// PNG/PGM files, in name order, repeated as needed (each prediction is printed).
    case folder([String])
    /// Seeded random 28×28 images (for load and latency, not accuracy).
    case synthetic(seed: UInt64)

    /// Parses `fmnist`, `synthetic` or a folder path.
    public static func named(_ name: String, datasetDirectory: String) throws -> InputSource {
        switch name {
        case "fmnist": return .fashionMNIST(try FashionMNIST(split: .test, directory: datasetDirectory))
        case "synthetic": return .synthetic(seed: 1)
        default: return .folder(try ImageFile.list(name))
        }
    }

    /// A stream of this source's inputs, from the first.
    public func makeIterator() -> Iterator { Iterator(source: self) }

    /// Successive `[1, 1, 28, 28]` inputs and their labels (nil where the source has none).
    public struct Iterator: Sendable {
        let source: InputSource
        private var index = 0
        private var generator: SeededGenerator

        init(source: InputSource) {
            self.source = source
            if case .synthetic(let seed) = source { generator = SeededGenerator(seed: seed) } else { generator = SeededGenerator(seed: 1) }
        }

        /// The next input; files are read as they come, so a bad file fails here, naming it.
        public mutating func next() throws -> (input: Tensor, label: UInt8?, name: String?) {
            defer { index += 1 }
            switch source {
            case .fashionMNIST(let data):
                return (data.image(index % data.count), data.labels[index % data.count], nil)
            case .folder(let paths):
                let path = paths[index % paths.count]
                return (try ImageFile.load(path), nil, path)
            case .synthetic:
                let pixels = (0..<784).map { _ in Float(generator.next() % 256) / 255 }
                return (Tensor(shape: [1, 1, 28, 28], scalars: pixels), nil, nil)
            }
        }
    }
}
