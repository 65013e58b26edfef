/// Affine (scale and zero-point) quantization, as in ONNX `QuantizeLinear` and `DequantizeLinear`.
///
/// `q = saturate(round_half_even(x / scale) + zeroPoint)` and `x = (q − zeroPoint) · scale`,
/// per tensor or per slice along one axis.
public enum AffineQuantization {
    /// Quantizes float32 `input` into the integer tensor `output` (int8, uint8, int16, uint16 or int32).
    ///
    /// `scales` and `zeroPoints` have one entry (per tensor) or one per slice of `axis`.
    public static func quantize(_ input: Tensor, scales: [Float], zeroPoints: [Double], axis: Int, into output: Tensor) {
        let (outer, length, inner) = slices(input.shape, axis: axis, parameters: scales.count)
        let x = input.pointer(as: Float.self)
        let (low, high) = range(output.dtype)
        var values = [Double](repeating: 0, count: input.count)
        for block in 0..<outer {
            for channel in 0..<length {
                let parameter = scales.count == 1 ? 0 : channel
                let scale = scales[parameter]
                let zero = zeroPoints.isEmpty ? 0 : zeroPoints[parameter]
                for element in 0..<inner {
                    let index = (block * length + channel) * inner + element
                    let scaled = (Double(x[index] / scale)).rounded(.toNearestOrEven) + zero
                    values[index] = scaled.isNaN ? zero : min(max(scaled, low), high)
                }
            }
        }
        store(values, into: output)
    }

    /// Dequantizes the integer tensor `input` into float32 `output`.
    public static func dequantize(_ input: Tensor, scales: [Float], zeroPoints: [Double], axis: Int, into output: Tensor) {
        let (outer, length, inner) = slices(input.shape, axis: axis, parameters: scales.count)
        let values = input.doubles()
        let y = output.pointer(as: Float.self)
        for block in 0..<outer {
            for channel in 0..<length {
                let parameter = scales.count == 1 ? 0 : channel
                let scale = scales[parameter]
                let zero = zeroPoints.isEmpty ? 0 : zeroPoints[parameter]
                for element in 0..<inner {
                    let index = (block * length + channel) * inner + element
                    y[index] = Float(values[index] - zero) * scale
                }
            }
        }
    }

    /// The representable range of an integer element type.
    public static func range(_ dtype: DType) -> (Double, Double) {
        switch dtype {
        case .int8: (-128, 127)
        case .uint8: (0, 255)
        case .int16: (-32768, 32767)
        case .uint16: (0, 65535)
        case .int32: (-2_147_483_648, 2_147_483_647)
        default: (-Double.greatestFiniteMagnitude, Double.greatestFiniteMagnitude)
        }
    }

    private static func slices(_ shape: [Int], axis: Int, parameters: Int) -> (Int, Int, Int) {
        if parameters == 1 || shape.isEmpty { return (1, 1, shape.reduce(1, *)) }
        return (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
    }

    private static func store(_ values: [Double], into output: Tensor) {
        switch output.dtype {
        case .int8: write(values, Int8.self, output)
        case .uint8: write(values, UInt8.self, output)
        case .int16: write(values, Int16.self, output)
        case .uint16: write(values, UInt16.self, output)
        case .int32: write(values, Int32.self, output)
        default: preconditionFailure("quantize into \(output.dtype)")
        }
    }

    private static func write<T: TensorScalar>(_ values: [Double], _ type: T.Type, _ output: Tensor) {
        let y = output.pointer(as: T.self)
        for index in values.indices { y[index] = T(fromDouble: values[index]) }
    }
}

/// Scale and zero point of one group of values quantized to `levels` steps over its own range
/// (widened to include 0, so that zeros stay exact): the feature frames' per-tensor and
/// per-channel parameters, and what training simulates at the bottleneck.
public struct AffineRange: Equatable, Sendable {
    public let scale: Float
    /// The level that stands for 0.
    public let zeroPoint: UInt8

    public init(scale: Float, zeroPoint: UInt8) {
        self.scale = scale
        self.zeroPoint = zeroPoint
    }

    /// Parameters covering the finite values of `values` (and 0) with `levels` steps (at most 255).
    public init(range values: some Sequence<Float>, levels: Int) {
        var low: Float = 0
        var high: Float = 0
        for value in values where value.isFinite {
            low = min(low, value)
            high = max(high, value)
        }
        // Divided before subtracting, so that a range of ±Float.greatestFiniteMagnitude stays
        // finite; a range so narrow that its step is zero or subnormal gets step 1 (every value
        // then quantizes to the zero point, off by less than the range).
        let step = high / Float(levels) - low / Float(levels)
        let scale = step.isNormal ? step : 1
        self.scale = scale
        zeroPoint = UInt8(min(max((-low / scale).rounded(), 0), Float(levels)))
    }

    /// The level of `value`, clamped to 0…`levels`; a non-finite value maps to the zero point.
    @inlinable
    public func quantize(_ value: Float, levels: Int) -> UInt8 {
        guard value.isFinite else { return zeroPoint }
        let level = (value / scale).rounded() + Float(zeroPoint)
        return UInt8(min(max(level, 0), Float(levels)))
    }

    /// The value a level stands for.
    @inlinable
    public func dequantize(_ level: UInt8) -> Float { (Float(level) - Float(zeroPoint)) * scale }
}
