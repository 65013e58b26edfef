import CleaveONNX
import CleaveTensor

/// A float32 tensor held in a Swift array: what layers pass forward and gradients pass back.
///
/// Training keeps every activation a backward pass needs, so values live in
/// plain arrays (copy-on-write, no arena); kernels reach them through pointers.
public struct FloatTensor: Sendable, Equatable {
    /// Dimensions, batch first.
    public var shape: [Int]
    /// Elements in row-major order.
    public var data: [Float]

    /// A tensor of the given shape and elements.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "shape \(shape) does not fit \(data.count) elements")
        self.shape = shape
        self.data = data
    }

    /// A tensor filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        self.shape = shape
        data = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Number of elements.
    public var count: Int { data.count }
    /// Size of the first (batch) axis.
    public var batch: Int { shape[0] }
    /// Elements per sample (all axes but the first).
    public var sampleSize: Int { shape.dropFirst().reduce(1, *) }

    /// The same elements under another shape with the same count.
    public func reshaped(_ newShape: [Int]) -> FloatTensor { FloatTensor(shape: newShape, data: data) }

    /// Samples `range` of the batch.
    public func samples(_ range: Range<Int>) -> FloatTensor {
        let size = sampleSize
        return FloatTensor(shape: [range.count] + shape.dropFirst(), data: Array(data[(range.lowerBound * size)..<(range.upperBound * size)]))
    }
}

/// A trainable tensor: its value, the gradient accumulated by the last backward pass, and optimizer state.
public final class Parameter {
    /// Name used in the exported ONNX model.
    public let name: String
    public let shape: [Int]
    /// Current value.
    public var value: [Float]
    /// Gradient of the loss with respect to ``value``, summed since the last ``zeroGradient()``.
    public var gradient: [Float]
    /// Whether weight decay applies (weights yes; biases and normalization parameters no).
    public let decays: Bool
    /// Whether the optimizer updates it (false while a stage freezes the layer).
    public var trainable = true
    /// Optimizer moments (momentum or Adam's first and second moments).
    var firstMoment: [Float] = []
    var secondMoment: [Float] = []

    /// A parameter with an initial value.
    public init(_ name: String, shape: [Int], value: [Float], decays: Bool) {
        precondition(shape.reduce(1, *) == value.count, "\(name): shape \(shape) does not fit \(value.count) values")
        self.name = name
        self.shape = shape
        self.value = value
        gradient = [Float](repeating: 0, count: value.count)
        self.decays = decays
    }

    /// Clears the accumulated gradient.
    public func zeroGradient() {
        for index in gradient.indices { gradient[index] = 0 }
    }

    /// Forgets the optimizer's moments, as a new optimizer would start (federated rounds).
    public func resetOptimizerState() {
        firstMoment = []
        secondMoment = []
    }
}

extension Parameter {
    /// Adds this parameter as an initializer of the exported model and returns its name.
    func export(to builder: inout ModelBuilder) -> String {
        builder.initializer(name, Tensor(shape: shape, scalars: value))
    }
}
