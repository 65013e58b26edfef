import CleaveONNX
import CleaveSupport
import CleaveTensor

/// `max(x, 0)` (ONNX `Relu`) or `min(max(x, 0), 6)` (ONNX `Clip`, ReLU6).
public final class Rectifier: Layer {
    public let name: String
    /// Upper clamp (`nil`: plain ReLU).
    public let ceiling: Float?
    private var output: [Float] = []

    /// A ReLU, or a ReLU clipped at `ceiling`.
    public init(_ name: String, ceiling: Float? = nil) {
        self.name = name
        self.ceiling = ceiling
    }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        let high = ceiling ?? .infinity
        var result = input
        result.data.withUnsafeMutableBufferPointer { values in
            for index in values.indices { values[index] = min(max(values[index], 0), high) }
        }
        if mode == .training { output = result.data }
        return result
    }

    /// The gradient passes where the output lies strictly inside `(0, ceiling)`.
    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let high = ceiling ?? .infinity
        var result = gradient
        result.data.withUnsafeMutableBufferPointer { values in
            output.withUnsafeBufferPointer { output in
                for index in values.indices where !(output[index] > 0 && output[index] < high) { values[index] = 0 }
            }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        guard let ceiling else { return builder.node("Relu", [input], [name]) }
        builder.initializer("\(name).min", Tensor(shape: [], scalars: [Float(0)]))
        builder.initializer("\(name).max", Tensor(shape: [], scalars: [ceiling]))
        return builder.node("Clip", [input, "\(name).min", "\(name).max"], [name])
    }
}

/// Zeroes a random fraction of activations while training and scales the rest up (inverted dropout);
/// the identity at inference, so it exports no node.
public final class Dropout: Layer {
    public let name: String
    public let rate: Float
    private var generator: SeededGenerator
    private var mask: [Float] = []

    /// Dropout of `rate` with its own seeded generator.
    public init(_ name: String, rate: Float, seed: UInt64) {
        self.name = name
        self.rate = rate
        generator = SeededGenerator(seed: seed)
    }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        guard mode == .training, rate > 0 else { return input }
        let keep = 1 / (1 - rate)
        mask = input.data.map { _ in Float(generator.next() >> 40) / Float(1 << 24) < rate ? 0 : keep }
        var output = input
        for index in output.data.indices { output.data[index] *= mask[index] }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        guard !mask.isEmpty else { return gradient }
        var result = gradient
        for index in result.data.indices { result.data[index] *= mask[index] }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String { input }
}

/// Simulates the bottleneck codec's affine quantization while training (straight-through estimator).
///
/// Each sample is quantized as one frame: its range (widened to include 0) is split into
/// `levels` steps, exactly as ``CleaveCodec``'s per-tensor parameters do (``AffineRange``), and dequantized.
/// The backward pass lets gradients through unchanged. At inference and in the exported model it
/// is the identity: there the real codec quantizes.
public final class FakeQuantize: Layer {
    public let name: String
    /// Number of steps (255 for uint8, 15 for int4); `nil` disables quantization.
    public var levels: Int?

    /// A quantization simulator with `levels` steps.
    public init(_ name: String, levels: Int?) {
        self.name = name
        self.levels = levels
    }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        guard mode == .training, let levels else { return input }
        var output = input
        let size = input.sampleSize
        for sample in 0..<input.batch {
            let range = (sample * size)..<((sample + 1) * size)
            let parameters = AffineRange(range: input.data[range], levels: levels)
            for index in range {
                output.data[index] = parameters.dequantize(parameters.quantize(input.data[index], levels: levels))
            }
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor { gradient }

    public func export(to builder: inout ModelBuilder, input: String) -> String { input }
}

/// `[N, …]` → `[N, ∏…]` (ONNX `Flatten`, axis 1).
public final class Flatten: Layer {
    public let name: String
    private var shape: [Int] = []

    public init(_ name: String) { self.name = name }

    public func outputShape(_ input: [Int]) -> [Int] { [input.reduce(1, *)] }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        shape = input.shape
        return input.reshaped([input.batch, input.sampleSize])
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor { gradient.reshaped(shape) }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        builder.node("Flatten", [input], [name], attributes: ["axis": .int(1)])
    }
}
