#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Element-wise activation functions on float32 tensors.
public enum Activation: Sendable, Equatable {
    case relu
    case leakyRelu(alpha: Float)
    case clip(min: Float, max: Float)
    case sigmoid
    case tanh
    case hardSigmoid(alpha: Float, beta: Float)
    case hardSwish

    /// The function applied to one value.
    @inline(__always)
    public func callAsFunction(_ x: Float) -> Float {
        switch self {
        case .relu: return x > 0 ? x : 0
        case .leakyRelu(let alpha): return x >= 0 ? x : alpha * x
        case .clip(let low, let high): return x.isNaN ? x : Swift.min(Swift.max(x, low), high)
        case .sigmoid: return x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x))
        case .tanh: return tanhf(x)
        case .hardSigmoid(let alpha, let beta): return Swift.max(0, Swift.min(1, alpha * x + beta))
        case .hardSwish: return x * Swift.max(0, Swift.min(1, x / 6 + 0.5))
        }
    }

    /// Applies the function to every element of `input`, writing `output` (which may be `input`).
    public func apply(_ input: Tensor, into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1)) {
        precondition(input.dtype == .float32 && output.dtype == .float32 && input.count == output.count)
        let source = input.pointer(as: Float.self)
        let destination = output.pointer(as: Float.self)
        // In place (a fused epilogue), the loops read and write through one pointer: with two
        // pointers to the same memory the vectorizer's overlap check sends every element down
        // its scalar path (measured 5× slower for Clip).
        let inPlace = source == destination
        pool.parallelFor(input.count, minimumChunk: 1 << 14) { range in
            switch self {
            case .relu:
                if inPlace {
                    for index in range { destination[index] = Swift.max(destination[index], 0) }
                } else {
                    for index in range { destination[index] = Swift.max(source[index], 0) }
                }
            case .clip(let low, let high):
                if inPlace {
                    for index in range { destination[index] = Swift.min(Swift.max(destination[index], low), high) }
                } else {
                    for index in range { destination[index] = Swift.min(Swift.max(source[index], low), high) }
                }
            default:
                for index in range { destination[index] = self(source[index]) }
            }
        }
    }
}

extension Activation {
    /// Applies the function in place to `count` floats at `values` (one row of a kernel's output).
    @inline(__always)
    func apply(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu: for index in 0..<count { values[index] = Swift.max(values[index], 0) }
        case .clip(let low, let high): for index in 0..<count { values[index] = Swift.min(Swift.max(values[index], low), high) }
        default: for index in 0..<count { values[index] = self(values[index]) }
        }
    }

    /// The epilogue of a convolution fused with the Add that follows it (and that Add's
    /// activation): `output = activation(output + residual)`, in place, one pass.
    ///
    /// `residual` has `output`'s element count and does not overlap it; `activation` nil adds only.
    public static func addResidual(_ residual: Tensor, into output: Tensor, then activation: Activation?, pool: ThreadPool) {
        precondition(residual.dtype == .float32 && output.dtype == .float32 && residual.count == output.count)
        let r = residual.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        pool.parallelFor(output.count, minimumChunk: 1 << 14) { range in
            switch activation {
            case nil: for index in range { y[index] += r[index] }
            case .relu?: for index in range { y[index] = Swift.max(y[index] + r[index], 0) }
            case .clip(let low, let high)?: for index in range { y[index] = Swift.min(Swift.max(y[index] + r[index], low), high) }
            case let other?: for index in range { y[index] = other(y[index] + r[index]) }
            }
        }
    }
}

/// Clamps every element of an integer or float tensor to `[low, high]`.
public enum Clamp {
    /// Writes `min(max(x, low), high)` for each element of `input` into `output`.
    public static func apply(_ input: Tensor, low: Double, high: Double, into output: Tensor) {
        switch input.dtype {
        case .float32: run(input, Float(low), Float(high), output)
        case .float64: run(input, low, high, output)
        case .int8: run(input, saturated(low, Int8.self), saturated(high, Int8.self), output)
        case .uint8: run(input, saturated(low, UInt8.self), saturated(high, UInt8.self), output)
        case .int16: run(input, saturated(low, Int16.self), saturated(high, Int16.self), output)
        case .uint16: run(input, saturated(low, UInt16.self), saturated(high, UInt16.self), output)
        case .int32: run(input, saturated(low, Int32.self), saturated(high, Int32.self), output)
        case .int64: run(input, saturated(low, Int64.self), saturated(high, Int64.self), output)
        case .bool: output.copyElements(from: input)
        }
    }

    /// `value` clamped into the range of `T` (infinite bounds become the type's limits).
    private static func saturated<T: FixedWidthInteger & TensorScalar>(_ value: Double, _ type: T.Type) -> T {
        if value.isNaN { return 0 }
        if value <= Double(T.min) { return T.min }
        if value >= Double(T.max) { return T.max }
        return T(fromDouble: value)
    }

    private static func run<T: Comparable>(_ input: Tensor, _ low: T, _ high: T, _ output: Tensor) {
        let source = input.pointer(as: T.self)
        let destination = output.pointer(as: T.self)
        for index in 0..<input.count { destination[index] = min(max(source[index], low), high) }
    }
}
