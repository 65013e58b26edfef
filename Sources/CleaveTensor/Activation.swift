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
        pool.parallelFor(input.count, minimumChunk: 1 << 14) { range in
            switch self {
            case .relu:
                for index in range { destination[index] = Swift.max(source[index], 0) }
            case .clip(let low, let high):
                for index in range { destination[index] = Swift.min(Swift.max(source[index], low), high) }
            default:
                for index in range { destination[index] = self(source[index]) }
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
        case .int8: run(input, Int8(fromDouble: low), Int8(fromDouble: high), output)
        case .uint8: run(input, UInt8(fromDouble: low), UInt8(fromDouble: high), output)
        case .int16: run(input, Int16(fromDouble: low), Int16(fromDouble: high), output)
        case .uint16: run(input, UInt16(fromDouble: low), UInt16(fromDouble: high), output)
        case .int32: run(input, Int32(fromDouble: low), Int32(fromDouble: high), output)
        case .int64: run(input, Int64(fromDouble: low), Int64(fromDouble: high), output)
        case .bool: output.copyElements(from: input)
        }
    }

    private static func run<T: Comparable>(_ input: Tensor, _ low: T, _ high: T, _ output: Tensor) {
        let source = input.pointer(as: T.self)
        let destination = output.pointer(as: T.self)
        for index in 0..<input.count { destination[index] = min(max(source[index], low), high) }
    }
}
