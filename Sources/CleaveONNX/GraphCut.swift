import CleaveTensor
import FoundationEssentials
import SwiftProtobuf

/// Splits a model at one tensor into a head (inputs → tensor) and a tail (tensor → outputs).
///
/// A cut is valid only when the tensor is the single thing the tail needs from
/// the head: no other head tensor, graph input or head-produced graph output
/// crosses it.
public struct GraphCut: Sendable {
    /// Indices of the nodes that compute the cut tensor.
    public let headNodes: [Int]
    /// Indices of the remaining nodes.
    public let tailNodes: [Int]
    /// The cut tensor.
    public let tensor: String

    /// Checks the cut at `tensor`, throwing an error that names every crossing tensor.
    public init(model: Model, at tensor: String) throws {
        let graph = model.graph
        let producers = graph.producers
        guard let producer = producers[tensor] else {
            let kind =
                graph.initializers[tensor] != nil
                ? "an initializer" : graph.inputs.contains { $0.name == tensor } ? "a graph input" : "not a tensor of this model"
            throw ONNXError.invalidCut("'\(tensor)' is \(kind); cut at a tensor a node produces")
        }
        var head: Set<Int> = []
        var pending = [producer]
        while let node = pending.popLast() {
            guard head.insert(node).inserted else { continue }
            for input in graph.nodes[node].inputs { if let source = producers[input] { pending.append(source) } }
        }
        let tail = graph.nodes.indices.filter { !head.contains($0) }
        guard !tail.isEmpty else { throw ONNXError.invalidCut("nothing is left after '\(tensor)'; the tail would be empty") }
        let graphInputs = Set(graph.inputs.map(\.name))
        var crossing: [String] = []
        for node in tail {
            for input in graph.nodes[node].inputs where input != tensor && !input.isEmpty {
                if let source = producers[input], head.contains(source) { crossing.append(input) }
                if graphInputs.contains(input) { crossing.append(input) }
            }
        }
        for output in graph.outputs {
            if let source = producers[output.name], head.contains(source) { crossing.append(output.name) }
        }
        let unique = Array(Set(crossing)).sorted()
        guard unique.isEmpty else {
            throw ONNXError.invalidCut(
                "other tensors cross the cut at '\(tensor)': \(unique.map { "'\($0)'" }.joined(separator: ", ")); the tail would need them too")
        }
        headNodes = head.sorted()
        tailNodes = tail
        self.tensor = tensor
    }

    /// Every tensor where a valid cut exists, in execution order.
    public static func candidates(in model: Model) -> [String] {
        model.graph.nodes.flatMap(\.outputs).filter { name in
            !name.isEmpty && (try? GraphCut(model: model, at: name)) != nil
        }
    }

    // MARK: - Writing the two models

    /// Serialized head and tail ONNX models; `type` is the cut tensor's type from a plan.
    public func serializedModels(of model: Model, cutType type: TensorType) throws -> (head: Data, tail: Data) {
        let graph = model.graph
        var cutInfo = Onnx_ValueInfoProto()
        cutInfo.name = tensor
        cutInfo.type.tensorType.elemType = Int32(type.dtype.onnxCode)
        // Keep the batch free when the model's first input has a symbolic batch, so tails can batch.
        let batchName: String? = model.graph.inputs.first?.dimensions?.first.flatMap {
            if case .symbolic(let name) = $0 { name.isEmpty ? "N" : name } else { nil }
        }
        cutInfo.type.tensorType.shape.dim = type.shape.enumerated().map { axis, size in
            var dimension = Onnx_TensorShapeProto.Dimension()
            if axis == 0, let batchName { dimension.dimParam = batchName } else { dimension.dimValue = Int64(size) }
            return dimension
        }

        func subModel(nodes: [Int], inputs: [Onnx_ValueInfoProto], outputs: [Onnx_ValueInfoProto], suffix: String) throws -> Data {
            var proto = model.proto
            let used = Set(nodes.flatMap { graph.nodes[$0].inputs })
            proto.graph.node = nodes.map { model.proto.graph.node[graph.nodes[$0].sourceIndex] }
            proto.graph.initializer = graph.initializers.keys.filter { used.contains($0) }.sorted().map { name in
                Onnx_TensorProto(graph.initializers[name]!, name: name)
            }
            proto.graph.input = inputs
            proto.graph.output = outputs
            proto.graph.valueInfo = []
            proto.graph.name = (model.proto.graph.name.isEmpty ? "graph" : model.proto.graph.name) + suffix
            return try proto.serializedData()
        }

        let headUses = Set(headNodes.flatMap { graph.nodes[$0].inputs })
        let headInputs = model.proto.graph.input.filter { headUses.contains($0.name) && graph.initializers[$0.name] == nil }
        let head = try subModel(nodes: headNodes, inputs: headInputs, outputs: [cutInfo], suffix: "_head")
        let tail = try subModel(nodes: tailNodes, inputs: [cutInfo], outputs: model.proto.graph.output, suffix: "_tail")
        return (head, tail)
    }
}
