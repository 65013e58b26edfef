import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

@Suite struct BadInputTests {
    @Test func truncatedModelsGiveErrorsNotCrashes() throws {
        let data = try ModelFixture.residualCNN()
        for length in stride(from: 0, to: data.count, by: max(1, data.count / 200)) {
            do {
                let model = try Model(serialized: data.prefix(length))
                _ = try InferenceSession(model: model).run(["x": Tensor(zeros: [1, 3, 16, 16])])
            } catch is ONNXError {
                continue
            }
        }
    }

    @Test func randomBytesAreNotAModel() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let bytes = Data((0..<Int.random(in: 1...512, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            #expect(throws: ONNXError.self) { _ = try Model(serialized: bytes) }
        }
    }

    @Test func unknownOperatorNamesNodeOperatorAndOpset() throws {
        var fixture = ModelFixture()
        fixture.node("FancyActivation", ["x"], "y")
        let data = try fixture.serialized(input: [1, 4], output: "y", outputShape: [1, 4])
        do {
            _ = try Model(serialized: data)
            Issue.record("an unknown operator was accepted")
        } catch let error as ONNXError {
            #expect(error.description == "node 'y_node': operator FancyActivation (opset 13) is not supported")
        }
    }

    @Test func mismatchedShapesAreReportedAtPlanning() throws {
        var fixture = ModelFixture()
        let w = fixture.random([5, 3], name: "w")
        fixture.node("MatMul", ["x", w], "y")
        let model = try Model(serialized: try fixture.serialized(input: [2, 4], output: "y", outputShape: [2, 3]))
        #expect(throws: ONNXError.self) { _ = try InferenceSession(model: model).run(["x": Tensor(zeros: [2, 4])]) }
    }

    @Test func wrongInputShapeIsRefused() throws {
        let model = try Model(serialized: try ModelFixture.residualCNN())
        #expect(throws: ONNXError.self) { _ = try InferenceSession(model: model).run(["x": Tensor(zeros: [1, 3, 8, 8])]) }
        #expect(throws: ONNXError.self) { _ = try InferenceSession(model: model).run([:]) }
    }

    @Test func npyDecoderRejectsMutatedFiles() throws {
        let valid = [UInt8](NPY.encode(Tensor(shape: [2, 3], scalars: [Float](repeating: 1, count: 6))))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if Bool.random(using: &generator) { bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator))) }
            _ = try? NPY.decode(Data(bytes), source: "fuzz")
        }
        let decoded = try NPY.decode(Data(valid), source: "valid")
        #expect(decoded.shape == [2, 3])
    }

    /// Untrusted sizes in a model — window attributes, pads, scales, reshape targets, declared
    /// input shapes — that would overflow shape arithmetic are refused with the node named.
    /// Each case trapped before the checks.
    @Test(arguments: ["conv pads", "conv dilations", "pool kernel", "pad amounts", "pad Int.min", "resize scales", "reshape target", "input shape"])
    func oversizedShapesAreRefusedNotTrapped(name: String) throws {
        let huge = 1 << 62
        var fixture = ModelFixture()
        func integers(_ values: [Int], _ label: String) -> String {
            fixture.initializers.append(Onnx_TensorProto(Tensor(shape: [values.count], scalars: values.map { Int64($0) }), name: label))
            return label
        }
        var inputType = TensorType([1, 1, 4, 4], .float32)
        switch name {
        case "conv pads": fixture.node("Conv", ["x", fixture.random([1, 1, 3, 3], name: "w")], "y", ["pads": [huge, huge, huge, huge]])
        case "conv dilations": fixture.node("Conv", ["x", fixture.random([1, 1, 3, 3], name: "w")], "y", ["dilations": [huge, huge]])
        case "pool kernel": fixture.node("MaxPool", ["x"], "y", ["kernel_shape": [huge, huge]])
        case "pad amounts": fixture.node("Pad", ["x", integers([0, 0, huge, huge, 0, 0, huge, huge], "p")], "y")
        case "pad Int.min": fixture.node("Pad", ["x", integers([0, 0, Int.min, 0, 0, 0, 0, 0], "p")], "y")
        case "resize scales":
            fixture.initializers.append(Onnx_TensorProto(Tensor(shape: [4], scalars: [Float(1), 1, 1e30, 1e30]), name: "s"))
            fixture.node("Resize", ["x", "", "s"], "y")
        case "reshape target": fixture.node("Reshape", ["x", integers([1 << 32, 1 << 32], "s")], "y")
        default:
            fixture.node("Relu", ["x"], "y")
            inputType = TensorType([1 << 32, 1 << 32], .float32)
        }
        let model = try Model(serialized: try fixture.serialized(input: [1, 1, 4, 4], output: "y", outputShape: [1]))
        do {
            _ = try InferenceSession(model: model).plan(for: ["x": inputType])
            Issue.record("\(name): planned")
        } catch let error as ONNXError {
            #expect("\(error)".contains(name == "input shape" ? "input 'x'" : "_node"), "\(name): \(error)")
        }
    }

    /// A header whose shape multiplies past `Int` is refused, not a trap.
    @Test(arguments: ["(4294967296, 4294967296)", "(9223372036854775807, 2)", "(2305843009213693952,)"])
    func npyShapesThatOverflowAreRefused(shape: String) {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        let padded = header + String(repeating: " ", count: (64 - (10 + header.count + 1) % 64) % 64) + "\n"
        let bytes =
            [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(padded.utf8.count & 0xFF), UInt8(padded.utf8.count >> 8)] + Array(padded.utf8) + [0, 0, 0, 0]
        do {
            _ = try NPY.decode(Data(bytes), source: "huge.npy")
            Issue.record("accepted shape \(shape)")
        } catch {
            #expect("\(error)".contains("more elements than memory can hold"), "\(error)")
        }
    }
}
