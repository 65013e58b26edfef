import CleaveSupport
import CleaveTensor

/// Element type and shape of a tensor known at planning time.
public struct TensorType: Sendable, Equatable, CustomStringConvertible {
    /// Dimensions.
    public var shape: [Int]
    /// Element type.
    public var dtype: DType

    /// A type with the given shape and element type.
    public init(_ shape: [Int], _ dtype: DType) {
        self.shape = shape
        self.dtype = dtype
    }

    /// Size of a tensor of this type, in bytes.
    public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }

    /// Whether a tensor of this type can exist: no negative dimension, and its size neither
    /// overflows nor exceeds the largest tensor Cleave holds (16 GiB). Shapes from a model
    /// (declared inputs, shapes a kernel computes from constants) are untrusted.
    var isHoldable: Bool {
        guard shape.allSatisfy({ $0 >= 0 }), let bytes = (shape + [dtype.byteSize]).checkedProduct() else { return false }
        return bytes <= maximumTensorBytes
    }

    public var description: String { "\(dtype)\(shape)" }
}

/// What the planner knows about one operator input: its type, and its value when constant.
struct InputInfo {
    let name: String
    let type: TensorType
    let value: Tensor?
}

/// Shared state of one executor run.
struct ExecutionContext {
    let pool: ThreadPool
    /// Working memory kernels reuse (im2col matrices), kept between runs.
    var scratch = ScratchBuffer()
}

/// A node's operator, configured from its attributes at load time.
///
/// `outputTypes` runs once per plan (shape inference); `run` runs per request and
/// writes into output tensors the executor has already allocated with those types.
protocol OperatorKernel: Sendable {
    /// Inputs whose *values* (not only shapes) decide the output shapes.
    var valueInputs: Set<Int> { get }
    /// The output types for the given inputs (`nil` for an omitted optional input).
    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType]
    /// Computes the outputs.
    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws
    /// The kernel a plan runs for these input types: itself, or a copy with what depends
    /// only on the types (window geometry, output sizes) worked out once, so that `run`
    /// does not redo it on every request.
    func specialized(for inputs: [InputInfo?]) throws -> any OperatorKernel
    /// Whether the kernel may write its first output over its first input (same bytes), so that
    /// the memory planner can give both one block when nothing reads the input afterwards.
    func overwritesInput(_ inputs: [InputInfo?], output: TensorType) -> Bool
}

extension OperatorKernel {
    var valueInputs: Set<Int> { [] }
    func specialized(for inputs: [InputInfo?]) throws -> any OperatorKernel { self }
    func overwritesInput(_ inputs: [InputInfo?], output: TensorType) -> Bool { false }
}

/// The node and opset a kernel is being built for, with typed attribute access.
struct NodeContext {
    let node: Node
    let opset: Int

    var name: String { node.name }

    func fail(_ reason: String) -> ONNXError { .invalidNode(node.name, op: node.opType, reason) }
    func mismatch(_ reason: String) -> ONNXError { .shapeMismatch(node.name, op: node.opType, reason) }

    func int(_ key: String) throws -> Int? {
        switch node.attributes[key] {
        case nil: return nil
        case .int(let value)?: return value
        default: throw fail("attribute '\(key)' must be an integer")
        }
    }

    func int(_ key: String, default value: Int) throws -> Int { try int(key) ?? value }

    func float(_ key: String, default value: Float) throws -> Float {
        switch node.attributes[key] {
        case nil: return value
        case .float(let result)?: return result
        case .int(let result)?: return Float(result)
        default: throw fail("attribute '\(key)' must be a float")
        }
    }

    func ints(_ key: String) throws -> [Int]? {
        switch node.attributes[key] {
        case nil: return nil
        case .ints(let values)?: return values
        case .int(let value)?: return [value]
        default: throw fail("attribute '\(key)' must be a list of integers")
        }
    }

    func string(_ key: String, default value: String) throws -> String {
        switch node.attributes[key] {
        case nil: return value
        case .string(let result)?: return result
        default: throw fail("attribute '\(key)' must be a string")
        }
    }
}

/// Normalizes a possibly negative axis against `rank`, or throws naming the node.
func resolveAxis(_ axis: Int, rank: Int, _ context: @autoclosure () -> String) throws -> Int {
    let resolved = axis < 0 ? axis + rank : axis
    guard resolved >= 0 && resolved < max(rank, 1) else {
        throw ONNXError.shapeMismatch(context(), op: "", "axis \(axis) is out of range for rank \(rank)")
    }
    return resolved
}

extension Array where Element == InputInfo? {
    /// The input at `index`, or a clear error when the node omitted a required input.
    func required(_ index: Int, _ kernel: String) throws -> InputInfo {
        guard index < count, let value = self[index] else {
            throw ONNXError.missingInput("\(kernel): required input \(index) is missing")
        }
        return value
    }
}
