import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

@Suite struct ExternalDataTests {
    /// A one-node MatMul model whose weight lives in `weights.bin` at `offset`, under `location`.
    func writeModel(location: String, offset: Int = 16, length: Int? = nil) throws -> (path: String, weight: [Float]) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-ext-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let weight: [Float] = (0..<12).map { Float($0) / 4 - 1 }
        var blob = Data(repeating: 0xAB, count: offset)
        blob.append(Data(Tensor(shape: [4, 3], scalars: weight).bytes()))
        try blob.write(to: folder.appendingPathComponent("weights.bin"))

        var fixture = ModelFixture()
        fixture.node("MatMul", ["x", "w"], "y")
        var tensor = Onnx_TensorProto()
        tensor.name = "w"
        tensor.dims = [4, 3]
        tensor.dataType = 1
        tensor.dataLocation = .external
        tensor.externalData = [("location", location), ("offset", "\(offset)"), ("length", "\(length ?? 48)")].map { key, value in
            var entry = Onnx_StringStringEntryProto()
            entry.key = key
            entry.value = value
            return entry
        }
        fixture.initializers = [tensor]
        let path = folder.appendingPathComponent("model.onnx").path
        try fixture.serialized(input: [2, 4], output: "y", outputShape: [2, 3]).write(to: URL(fileURLWithPath: path))
        return (path, weight)
    }

    @Test func externalWeightsAreReadFromTheModelFolder() throws {
        let (path, weight) = try writeModel(location: "weights.bin")
        let x: [Float] = [1, 0, 0, 0, 0, 1, 0, 0]
        let y = try InferenceSession(contentsOf: path).run(["x": Tensor(shape: [2, 4], scalars: x)])["y"]!
        #expect(y.scalars(as: Float.self) == Array(weight[0..<6]))
    }

    @Test func externalPathsOutsideTheFolderAreRefused() throws {
        let (path, _) = try writeModel(location: "../weights.bin")
        #expect(throws: ONNXError.self) { _ = try Model(contentsOf: path) }
    }

    @Test func shortExternalFileIsAnError() throws {
        let (path, _) = try writeModel(location: "weights.bin", offset: 16, length: 480)
        #expect(throws: ONNXError.self) { _ = try Model(contentsOf: path) }
    }
}
