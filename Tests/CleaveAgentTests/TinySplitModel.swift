import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation

/// A split model small enough that agent tests spend their time on the agent, not on loading
/// models: `image [1, 1, 28, 28]` → Conv 7×7/7 (4 channels) = `bottleneck [1, 4, 4, 4]` →
/// Flatten → Gemm → `logits [1, 10]`, written as a model folder like `cleave model split` makes.
enum TinySplitModel {
    static let bundle = Result { try make() }

    static func make() throws -> ModelBundle {
        var generator = SeededGenerator(seed: 5)
        func weights(_ shape: [Int]) -> Tensor {
            Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float(generator.normal() * 0.2) })
        }
        let convolution = weights([4, 1, 7, 7])
        let dense = weights([10, 64])
        func model(head: Bool, tail: Bool) throws -> [UInt8] {
            var builder = ModelBuilder(name: "tiny")
            if head {
                builder.input("image", dimensions: [.fixed(1), .fixed(1), .fixed(28), .fixed(28)])
                builder.initializer("w", convolution)
                builder.node("Conv", ["image", "w"], ["bottleneck"], attributes: ["kernel_shape": .ints([7, 7]), "strides": .ints([7, 7])])
            } else {
                builder.input("bottleneck", dimensions: [.fixed(1), .fixed(4), .fixed(4), .fixed(4)])
            }
            if tail {
                builder.initializer("d", dense)
                builder.node("Flatten", ["bottleneck"], ["flat"])
                builder.node("Gemm", ["flat", "d"], ["logits"], attributes: ["transB": .int(1)])
                builder.output("logits", dimensions: [.fixed(1), .fixed(10)])
            } else {
                builder.output("bottleneck", dimensions: [.fixed(1), .fixed(4), .fixed(4), .fixed(4)])
            }
            return [UInt8](try builder.serialized())
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-tiny-\(UUID().uuidString)").path
        try SystemCall.makeDirectories(folder)
        var files: [ModelManifest.File] = []
        for (name, bytes) in [
            ("full.onnx", try model(head: true, tail: true)), ("head.onnx", try model(head: true, tail: false)),
            ("tail.onnx", try model(head: false, tail: true)),
        ] {
            try SystemCall.writeFileAtomically("\(folder)/\(name)", bytes)
            files.append(ModelManifest.File(path: name, sha256: SHA256.hex(bytes)))
        }
        let manifest = ModelManifest(
            name: "tiny", inputName: "image", inputShape: [1, 28, 28], cutTensor: "bottleneck", cutShape: [4, 4, 4], full: files[0], head: files[1],
            tail: files[2], codec: "int4", zstdLevel: nil, normalization: "pixel/255", accuracy: [:], command: "test fixture", seed: 5)
        try SystemCall.writeFileAtomically("\(folder)/manifest.json", [UInt8](try JSONEncoder().encode(manifest)))
        defer { try? FileManager.default.removeItem(atPath: folder) }
        return try ModelBundle(directory: folder)
    }
}
