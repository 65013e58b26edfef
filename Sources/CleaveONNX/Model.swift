import CleaveSupport
import CleaveTensor
import FoundationEssentials
import SwiftProtobuf

/// An ONNX model loaded into memory and checked: every tensor has a producer,
/// the graph is acyclic and every operator is one Cleave can run.
public struct Model: Sendable {
    /// The graph with nodes in topological order.
    public let graph: Graph
    /// Opset version of the default ONNX domain.
    public let opset: Int
    /// Producer name and version from the file, for `inspect`.
    public let producer: String
    /// The file's model without its initializers (nodes, value infos, metadata), for writing cuts.
    let proto: Onnx_ModelProto
    /// One configured kernel per node of ``graph``, in the same order.
    let kernels: [any OperatorKernel]

    // MARK: - Loading

    /// Reads and checks the model at `path`.
    ///
    /// - Throws: ``ONNXError`` naming the file, node or tensor that is wrong.
    public init(contentsOf path: String) throws {
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile(path)
        } catch {
            throw ONNXError.unreadableFile(path, reason: error.reason)
        }
        try self.init(serialized: Data(bytes), source: path, directory: URL(fileURLWithPath: path).deletingLastPathComponent())
    }

    /// Decodes and checks a serialized `ModelProto`; `directory` is where external data lives.
    public init(serialized data: Data, source: String = "model", directory: URL? = nil) throws {
        guard !data.isEmpty else { throw ONNXError.notAModel(source, reason: "the file is empty") }
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw ONNXError.notAModel(source, reason: "the protobuf is truncated or corrupt (\(error))")
        }
        try self.init(proto: proto, source: source, directory: directory)
    }

    init(proto: Onnx_ModelProto, source: String, directory: URL?) throws {
        guard proto.irVersion > 0, proto.hasGraph else {
            throw ONNXError.notAModel(source, reason: "it has no IR version or no graph")
        }
        guard !proto.graph.output.isEmpty else {
            throw ONNXError.notAModel(source, reason: "the graph declares no outputs")
        }
        let defaultOpset = proto.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }
        // Weights live once, decoded in `graph.initializers`; the writer re-encodes them.
        var structure = proto
        structure.graph.initializer = []
        self.proto = structure
        opset = Int(defaultOpset?.version ?? 1)
        producer = [proto.producerName, proto.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
        let graph = try Self.makeGraph(proto.graph, directory: directory)
        let opset = self.opset
        kernels = try graph.nodes.map { try OperatorRegistry.standard.kernel(for: $0, opset: opset) }
        self.graph = graph
    }

    /// A model with a rewritten graph and its kernels (from ``GraphOptimizer``); `proto` stays the original file's.
    init(rewriting original: Model, graph: Graph, kernels: [any OperatorKernel]) {
        self.graph = graph
        self.kernels = kernels
        opset = original.opset
        producer = original.producer
        proto = original.proto
    }

    // MARK: - Graph construction

    private static func makeGraph(_ proto: Onnx_GraphProto, directory: URL?) throws -> Graph {
        var initializers: [String: Tensor] = [:]
        for tensor in proto.initializer {
            initializers[tensor.name] = try Tensor(proto: tensor, directory: directory)
        }
        let inputs = proto.input.filter { initializers[$0.name] == nil }.map(declaration)
        let outputs = proto.output.map(declaration)
        var nodes: [Node] = []
        for (index, node) in proto.node.enumerated() {
            nodes.append(try makeNode(node, index: index, directory: directory))
        }
        return Graph(
            nodes: try topologicallySorted(nodes, available: Set(inputs.map(\.name)).union(initializers.keys), outputs: outputs),
            inputs: inputs, outputs: outputs, initializers: initializers)
    }

    static func declaration(_ info: Onnx_ValueInfoProto) -> ValueDeclaration {
        guard info.type.tensorType.hasElemType || info.type.tensorType.hasShape else {
            return ValueDeclaration(name: info.name, dtype: nil, dimensions: nil)
        }
        let tensorType = info.type.tensorType
        let dimensions: [Dimension]? =
            tensorType.hasShape
            ? tensorType.shape.dim.map { dimension in
                if case .dimValue(let value)? = dimension.value { return .fixed(Int(value)) }
                return .symbolic(dimension.dimParam)
            }
            : nil
        return ValueDeclaration(name: info.name, dtype: DType(onnxCode: Int(tensorType.elemType)), dimensions: dimensions)
    }

    private static func makeNode(_ proto: Onnx_NodeProto, index: Int, directory: URL?) throws -> Node {
        let name = proto.name.isEmpty ? "\(proto.opType)_\(index)" : proto.name
        var attributes: [String: AttributeValue] = [:]
        for attribute in proto.attribute {
            attributes[attribute.name] = try attributeValue(attribute, node: name, directory: directory)
        }
        return Node(
            name: name, opType: proto.opType, domain: proto.domain == "ai.onnx" ? "" : proto.domain,
            inputs: proto.input, outputs: proto.output, attributes: attributes, sourceIndex: index)
    }

    private static func attributeValue(_ proto: Onnx_AttributeProto, node: String, directory: URL?) throws -> AttributeValue {
        switch proto.type {
        case .float: return .float(proto.f)
        case .int: return .int(Int(proto.i))
        case .string: return .string(String(decoding: proto.s, as: UTF8.self))
        case .tensor: return .tensor(try Tensor(proto: proto.t, directory: directory))
        case .floats: return .floats(proto.floats)
        case .ints: return .ints(proto.ints.map { Int($0) })
        case .strings: return .strings(proto.strings.map { String(decoding: $0, as: UTF8.self) })
        default: return .unsupported(kind: "\(proto.type)")
        }
    }

    /// Orders nodes so that each comes after the producers of its inputs.
    private static func topologicallySorted(_ nodes: [Node], available: Set<String>, outputs: [ValueDeclaration]) throws -> [Node] {
        var producer: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for output in node.outputs where !output.isEmpty {
                if producer[output] != nil || available.contains(output) {
                    throw ONNXError.invalidModel("tensor '\(output)' is produced more than once (again by node '\(node.name)')")
                }
                producer[output] = index
            }
        }
        for node in nodes {
            for input in node.inputs where !input.isEmpty && producer[input] == nil && !available.contains(input) {
                throw ONNXError.invalidModel("node '\(node.name)' reads tensor '\(input)', which no node, input or initializer provides")
            }
        }
        for output in outputs where producer[output.name] == nil && !available.contains(output.name) {
            throw ONNXError.invalidModel("graph output '\(output.name)' is never produced")
        }
        var state = [UInt8](repeating: 0, count: nodes.count)  // 0 new, 1 visiting, 2 done
        var order: [Node] = []
        order.reserveCapacity(nodes.count)
        for root in nodes.indices where state[root] == 0 {
            var stack: [(node: Int, next: Int)] = [(root, 0)]
            state[root] = 1
            while let (current, next) = stack.last {
                let inputs = nodes[current].inputs
                if next < inputs.count {
                    stack[stack.count - 1].next += 1
                    guard let dependency = producer[inputs[next]] else { continue }
                    if state[dependency] == 1 {
                        throw ONNXError.invalidModel("the graph has a cycle through node '\(nodes[dependency].name)'")
                    }
                    if state[dependency] == 0 {
                        state[dependency] = 1
                        stack.append((dependency, 0))
                    }
                } else {
                    state[current] = 2
                    order.append(nodes[current])
                    stack.removeLast()
                }
            }
        }
        return order
    }
}

extension Model {
    /// The operator types of the model at `path`, read without checking that Cleave supports them.
    public static func operatorTypes(atPath path: String) throws -> [String] {
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile(path)
        } catch {
            throw ONNXError.unreadableFile(path, reason: error.reason)
        }
        return try Onnx_ModelProto(serializedBytes: bytes).graph.node.map(\.opType)
    }
}
