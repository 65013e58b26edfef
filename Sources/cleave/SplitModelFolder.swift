import CleaveCodec
import CleaveDatasets
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTrain
import Foundation

/// Writes a split model folder (`full.onnx`, `head.onnx`, `tail.onnx`, `manifest.json`) and measures
/// every codec on the Fashion-MNIST test set through the real path: ONNX head → frame encoder → decoder → ONNX tail.
struct SplitModelFolder {
    struct CodecResult {
        let codec: FrameCodec
        let accuracy: Double
        let meanFrameBytes: Double
    }

    let directory: String
    let name: String
    let cutShape: [Int]
    let command: String
    let seed: UInt64
    var headShare: Double?

    /// Writes the files and the manifest; returns the manifest and the per-codec results.
    func write(full: Data, head: Data, tail: Data, test: FashionMNIST, threads: Int) throws -> (ModelManifest, [CodecResult]) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let files = [("full.onnx", full), ("head.onnx", head), ("tail.onnx", tail)]
        for (file, data) in files { try data.write(to: URL(fileURLWithPath: "\(directory)/\(file)")) }
        func reference(_ index: Int) -> ModelManifest.File {
            ModelManifest.File(path: files[index].0, sha256: SHA256.hex([UInt8](files[index].1)))
        }
        var manifest = ModelManifest(
            name: name, inputName: FashionMNISTNetworks.inputName, inputShape: [1, 28, 28], cutTensor: FashionMNISTNetworks.bottleneckName,
            cutShape: cutShape, full: reference(0), head: reference(1), tail: reference(2), codec: "uint8", zstdLevel: 3,
            normalization: "pixel / 255", accuracy: [:], command: command, seed: seed)
        manifest.headMultiplyAddShare = headShare.map { ($0 * 10000).rounded() / 10000 }
        let headSession = InferenceSession(model: try Model(serialized: head), threads: threads)
        let tailSession = InferenceSession(model: try Model(serialized: tail), threads: threads)
        var results: [CodecResult] = []
        var bytes: [String: Double] = [:]
        for codec in FrameCodec.allCases {
            let result = try SplitEvaluation(
                head: headSession, tail: tailSession, manifest: manifest, codec: codec, zstdLevel: 3, data: test, limit: test.count)
            manifest.accuracy[codec.description] = (result.accuracy * 10000).rounded() / 10000
            bytes[codec.description] = (result.meanFrameBytes * 10).rounded() / 10
            results.append(CodecResult(codec: codec, accuracy: result.accuracy, meanFrameBytes: result.meanFrameBytes))
        }
        manifest.frameBytes = bytes
        // Recommend the smallest frame that keeps accuracy within 0.5 points of float32.
        let reference = results.first { $0.codec == .float32 }!.accuracy
        let recommended = results.filter { $0.accuracy >= reference - 0.005 }.min { $0.meanFrameBytes < $1.meanFrameBytes } ?? results[0]
        manifest.codec = recommended.codec.description
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(manifest).write(to: URL(fileURLWithPath: "\(directory)/manifest.json"))
        return (manifest, results)
    }

    /// Prints the per-codec table.
    static func printTable(_ results: [CodecResult]) {
        print("codec    accuracy  bytes/frame (mean over the test set; header, zstd when it helps, CRC included)")
        for result in results {
            print(
                result.codec.description.padding(toLength: 9, withPad: " ", startingAt: 0)
                    + String(format: "%.2f%%    %.1f", result.accuracy * 100, result.meanFrameBytes))
        }
    }
}
