import CleaveTensor
import FoundationEssentials
import SwiftProtobuf

/// Builds ONNX models in code: what training recipes export and tests use as fixtures.
public struct ModelBuilder {
    private var proto = Onnx_ModelProto()

    /// An empty graph named `name` at `opset`.
    public init(name: String, opset: Int = 13) {
        proto.irVersion = 8
        proto.producerName = "cleave"
        var import_ = Onnx_OperatorSetIdProto()
        import_.version = Int64(opset)
        proto.opsetImport = [import_]
        proto.graph.name = name
    }

    /// Declares a graph input; a `.symbolic` dimension stays free (e.g. the batch).
    public mutating func input(_ name: String, dtype: DType = .float32, dimensions: [Dimension]) {
        proto.graph.input.append(Self.valueInfo(name, dtype, dimensions))
    }

    /// Declares a graph output.
    public mutating func output(_ name: String, dtype: DType = .float32, dimensions: [Dimension]) {
        proto.graph.output.append(Self.valueInfo(name, dtype, dimensions))
    }

    /// Adds a constant tensor (a weight) and returns its name.
    @discardableResult
    public mutating func initializer(_ name: String, _ tensor: Tensor) -> String {
        proto.graph.initializer.append(Onnx_TensorProto(tensor, name: name))
        return name
    }

    /// Adds a node and returns the name of its first output.
    @discardableResult
    public mutating func node(_ op: String, _ inputs: [String], _ outputs: [String], attributes: [String: AttributeValue] = [:]) -> String {
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = outputs.first.map { "\(op)_\($0)" } ?? op
        node.input = inputs
        node.output = outputs
        node.attribute = attributes.sorted { $0.key < $1.key }.map { key, value in
            var attribute = Onnx_AttributeProto()
            attribute.name = key
            switch value {
            case .float(let number):
                attribute.type = .float
                attribute.f = number
            case .int(let number):
                attribute.type = .int
                attribute.i = Int64(number)
            case .string(let text):
                attribute.type = .string
                attribute.s = Data(text.utf8)
            case .tensor(let tensor):
                attribute.type = .tensor
                attribute.t = Onnx_TensorProto(tensor, name: key)
            case .floats(let numbers):
                attribute.type = .floats
                attribute.floats = numbers
            case .ints(let numbers):
                attribute.type = .ints
                attribute.ints = numbers.map { Int64($0) }
            case .strings(let texts):
                attribute.type = .strings
                attribute.strings = texts.map { Data($0.utf8) }
            case .unsupported:
                break
            }
            return attribute
        }
        proto.graph.node.append(node)
        return outputs.first ?? ""
    }

    /// The serialized model.
    public func serialized() throws -> Data { try proto.serializedData() }

    static func valueInfo(_ name: String, _ dtype: DType, _ dimensions: [Dimension]) -> Onnx_ValueInfoProto {
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType.elemType = Int32(dtype.onnxCode)
        info.type.tensorType.shape.dim = dimensions.map { dimension in
            var proto = Onnx_TensorShapeProto.Dimension()
            switch dimension {
            case .fixed(let size): proto.dimValue = Int64(size)
            case .symbolic(let name): proto.dimParam = name
            }
            return proto
        }
        return info
    }
}
