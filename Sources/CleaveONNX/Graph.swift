import CleaveTensor

/// One dimension of a declared input or output: a number or a symbolic name such as `batch`.
public enum Dimension: Sendable, Equatable, CustomStringConvertible {
    case fixed(Int)
    case symbolic(String)

    public var description: String {
        switch self {
        case .fixed(let value): "\(value)"
        case .symbolic(let name): name.isEmpty ? "?" : name
        }
    }
}

/// A graph input or output as the model declares it.
public struct ValueDeclaration: Sendable, Equatable {
    /// Tensor name.
    public let name: String
    /// Element type, when declared and supported.
    public let dtype: DType?
    /// Dimensions, when declared.
    public let dimensions: [Dimension]?

    /// The declared shape with every symbolic dimension replaced by `symbolic`.
    public func concreteShape(symbolic: Int = 1) -> [Int]? {
        dimensions?.map { if case .fixed(let value) = $0 { value } else { symbolic } }
    }
}

/// An attribute value of a node.
public enum AttributeValue: Sendable {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(Tensor)
    case floats([Float])
    case ints([Int])
    case strings([String])
    /// An attribute kind Cleave does not use (graphs, sparse tensors, type protos).
    case unsupported(kind: String)
}

/// One operator application in the graph.
public struct Node: Sendable {
    /// The node's name, or a generated `OpType_index` when the model leaves it empty.
    public let name: String
    /// Operator name, such as `Conv`.
    public let opType: String
    /// Operator domain; empty for the default ONNX domain.
    public let domain: String
    /// Input tensor names; an empty string marks an omitted optional input.
    public let inputs: [String]
    /// Output tensor names; an empty string marks an unused optional output.
    public let outputs: [String]
    /// Attributes by name.
    public let attributes: [String: AttributeValue]
    /// Position of the node in the file, to copy it verbatim when writing a cut model.
    let sourceIndex: Int
}

/// A model's computation graph, nodes in topological order.
public struct Graph: Sendable {
    /// Operators, each after the producers of its inputs.
    public let nodes: [Node]
    /// Inputs the caller provides (initializers excluded).
    public let inputs: [ValueDeclaration]
    /// Outputs the model produces.
    public let outputs: [ValueDeclaration]
    /// Constant tensors (weights) by name.
    public let initializers: [String: Tensor]

    /// Index of the node that produces each tensor.
    public var producers: [String: Int] {
        var result: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for output in node.outputs where !output.isEmpty { result[output] = index }
        }
        return result
    }
}
