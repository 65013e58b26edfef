/// Why a model could not be loaded, planned or run.
///
/// Every case names the offending file, node, operator or tensor, so the
/// description is a sentence a user can act on.
public struct ONNXError: Error, Sendable, Equatable, CustomStringConvertible {
    enum Code: Sendable, Equatable {
        case unreadableFile
        case notAModel
        case invalidModel
        case unsupportedOperator
        case invalidNode
        case shapeMismatch
        case unsupportedTensor
        case missingInput
        case invalidCut
    }

    let code: Code
    /// The sentence shown to the user.
    public let description: String

    static func unreadableFile(_ path: String, reason: String) -> ONNXError {
        ONNXError(code: .unreadableFile, description: "cannot read \(path): \(reason)")
    }

    static func notAModel(_ path: String, reason: String) -> ONNXError {
        ONNXError(code: .notAModel, description: "\(path) is not a valid ONNX model: \(reason)")
    }

    static func invalidModel(_ reason: String) -> ONNXError {
        ONNXError(code: .invalidModel, description: "invalid model: \(reason)")
    }

    static func unsupportedOperator(node: String, op: String, domain: String, opset: Int) -> ONNXError {
        let qualified = domain.isEmpty ? op : "\(domain).\(op)"
        return ONNXError(
            code: .unsupportedOperator,
            description: "node '\(node)': operator \(qualified) (opset \(opset)) is not supported")
    }

    static func invalidNode(_ node: String, op: String, _ reason: String) -> ONNXError {
        ONNXError(code: .invalidNode, description: "node '\(node)' (\(op)): \(reason)")
    }

    static func shapeMismatch(_ node: String, op: String, _ reason: String) -> ONNXError {
        ONNXError(code: .shapeMismatch, description: "node '\(node)' (\(op)): shape mismatch: \(reason)")
    }

    static func unsupportedTensor(_ name: String, _ reason: String) -> ONNXError {
        ONNXError(code: .unsupportedTensor, description: "tensor '\(name)': \(reason)")
    }

    static func missingInput(_ reason: String) -> ONNXError {
        ONNXError(code: .missingInput, description: reason)
    }

    static func invalidCut(_ reason: String) -> ONNXError {
        ONNXError(code: .invalidCut, description: "cannot cut the graph: \(reason)")
    }
}
