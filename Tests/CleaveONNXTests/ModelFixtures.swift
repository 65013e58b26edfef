import CleaveTensor
import Foundation

@testable import CleaveONNX

/// Builds small ONNX models in memory for tests (no files from elsewhere).
struct ModelFixture {
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []
    var seed: UInt64 = 7

    mutating func random(_ shape: [Int], name: String) -> String {
        var values: [Float] = []
        for _ in 0..<shape.reduce(1, *) {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            values.append(Float(Int(seed >> 40) % 2001 - 1000) / 4000)
        }
        initializers.append(Onnx_TensorProto(Tensor(shape: shape, scalars: values), name: name))
        return name
    }

    mutating func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [String: [Int]] = [:]) {
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = output + "_node"
        node.input = inputs
        node.output = [output]
        node.attribute = attributes.sorted { $0.key < $1.key }.map { key, value in
            var attribute = Onnx_AttributeProto()
            attribute.name = key
            if key == "group" {
                attribute.type = .int
                attribute.i = Int64(value[0])
            } else {
                attribute.type = .ints
                attribute.ints = value.map { Int64($0) }
            }
            return attribute
        }
        nodes.append(node)
    }

    static func valueInfo(_ name: String, _ shape: [Int]) -> Onnx_ValueInfoProto {
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType.elemType = 1
        info.type.tensorType.shape.dim = shape.map {
            var dimension = Onnx_TensorShapeProto.Dimension()
            dimension.dimValue = Int64($0)
            return dimension
        }
        return info
    }

    func serialized(input: [Int], output: String, outputShape: [Int]) throws -> Data {
        var model = Onnx_ModelProto()
        model.irVersion = 8
        var opset = Onnx_OperatorSetIdProto()
        opset.version = 13
        model.opsetImport = [opset]
        model.graph.name = "fixture"
        model.graph.node = nodes
        model.graph.initializer = initializers
        model.graph.input = [Self.valueInfo("x", input)]
        model.graph.output = [Self.valueInfo(output, outputShape)]
        return try model.serializedData()
    }

    /// A small residual CNN: conv → relu → (depthwise conv → conv) + skip → pool → gemm.
    static func residualCNN() throws -> Data {
        var f = ModelFixture()
        let w1 = f.random([8, 3, 3, 3], name: "w1")
        let b1 = f.random([8], name: "b1")
        f.node("Conv", ["x", w1, b1], "c1", ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]])
        f.node("Relu", ["c1"], "r1")
        let wd = f.random([8, 1, 3, 3], name: "wd")
        f.node("Conv", ["r1", wd], "dw", ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": [8]])
        let wp = f.random([8, 8, 1, 1], name: "wp")
        f.node("Conv", ["dw", wp], "pw", ["kernel_shape": [1, 1]])
        f.node("Add", ["pw", "r1"], "sum")
        f.node("GlobalAveragePool", ["sum"], "pool")
        f.node("Flatten", ["pool"], "flat")
        let wf = f.random([4, 8], name: "wf")
        var gemm = Onnx_NodeProto()
        gemm.opType = "Gemm"
        gemm.name = "fc"
        gemm.input = ["flat", wf]
        gemm.output = ["y"]
        var transB = Onnx_AttributeProto()
        transB.name = "transB"
        transB.type = .int
        transB.i = 1
        gemm.attribute = [transB]
        f.nodes.append(gemm)
        return try f.serialized(input: [1, 3, 16, 16], output: "y", outputShape: [1, 4])
    }
}
