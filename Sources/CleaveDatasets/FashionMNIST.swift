import CZlib
import CleaveSupport
import CleaveTensor
import FoundationEssentials

/// The Fashion-MNIST data set from Debian's `dataset-fashion-mnist` (IDX files, gzip-compressed).
public struct FashionMNIST: Sendable {
    /// Where Debian installs the files.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    /// The ten class names, by label.
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    /// Which half of the data set.
    public enum Split: String, Sendable {
        case train, test
        var prefix: String { self == .train ? "train" : "t10k" }
    }

    /// Images as bytes (0–255), 28×28 each, row-major.
    public let pixels: [UInt8]
    /// Labels 0–9.
    public let labels: [UInt8]
    /// Number of samples.
    public var count: Int { labels.count }

    private init(pixels: [UInt8], labels: [UInt8]) {
        self.pixels = pixels
        self.labels = labels
    }

    /// The first `count` samples (all of them when there are fewer): small runs in tests.
    public func prefix(_ count: Int) -> FashionMNIST {
        let kept = min(max(0, count), self.count)
        return FashionMNIST(pixels: Array(pixels[0..<(kept * 784)]), labels: Array(labels[0..<kept]))
    }

    /// Loads a split from `directory`.
    ///
    /// - Throws: ``DatasetError`` naming the missing package or the corrupt file.
    public init(split: Split, directory: String = FashionMNIST.defaultDirectory) throws {
        let imagesPath = "\(directory)/\(split.prefix)-images-idx3-ubyte.gz"
        let labelsPath = "\(directory)/\(split.prefix)-labels-idx1-ubyte.gz"
        for path in [imagesPath, labelsPath] where !SystemCall.isReadable(path) {
            throw DatasetError(description: "\(path) is missing: install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)")
        }
        let images = try IDX.read(try Gzip.decompress(file: imagesPath), source: imagesPath, expectedRank: 3)
        let labels = try IDX.read(try Gzip.decompress(file: labelsPath), source: labelsPath, expectedRank: 1)
        guard images.dimensions.count == 3, images.dimensions[1] == 28, images.dimensions[2] == 28 else {
            throw DatasetError(description: "\(imagesPath): expected N×28×28 images, found \(images.dimensions)")
        }
        guard images.dimensions[0] == labels.dimensions[0] else {
            throw DatasetError(description: "\(imagesPath) has \(images.dimensions[0]) images but \(labelsPath) has \(labels.dimensions[0]) labels")
        }
        if let bad = labels.data.first(where: { $0 > 9 }) {
            throw DatasetError(description: "\(labelsPath): label \(bad) is outside 0–9")
        }
        pixels = images.data
        self.labels = labels.data
    }

    /// Image `index` as a float32 tensor `[1, 1, 28, 28]` scaled to 0–1.
    public func image(_ index: Int) -> Tensor {
        Tensor(shape: [1, 1, 28, 28], scalars: pixels[(index * 784)..<((index + 1) * 784)].map { Float($0) / 255 })
    }
}

/// A data set that could not be read.
public struct DatasetError: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(description: String) { self.description = description }
}

/// The IDX format of the MNIST family: magic (two zero bytes, type 0x08, rank), big-endian dimensions, data.
enum IDX {
    static func read(_ bytes: [UInt8], source: String, expectedRank: Int) throws -> (dimensions: [Int], data: [UInt8]) {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08 else {
            throw DatasetError(description: "\(source): not an unsigned-byte IDX file (bad magic)")
        }
        let rank = Int(bytes[3])
        guard rank == expectedRank, bytes.count >= 4 + 4 * rank else {
            throw DatasetError(description: "\(source): expected rank \(expectedRank), header says \(rank)")
        }
        let dimensions = (0..<rank).map { axis in (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + axis * 4 + $1]) } }
        let count = dimensions.reduce(1, *)
        guard bytes.count - 4 - 4 * rank == count else {
            throw DatasetError(description: "\(source): header promises \(count) bytes of data, file has \(bytes.count - 4 - 4 * rank)")
        }
        return (dimensions, Array(bytes[(4 + 4 * rank)...]))
    }
}

/// gzip decompression through zlib.
enum Gzip {
    static func decompress(file path: String) throws -> [UInt8] {
        guard let handle = gzopen(path, "rb") else { throw DatasetError(description: "\(path): cannot open") }
        defer { gzclose(handle) }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let read = buffer.withUnsafeMutableBytes { gzread(handle, $0.baseAddress, UInt32($0.count)) }
            if read < 0 { throw DatasetError(description: "\(path): corrupt gzip data") }
            if read == 0 { break }
            output.append(contentsOf: buffer[0..<Int(read)])
        }
        return output
    }
}
