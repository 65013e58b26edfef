#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The per-element steps of a Llama block: RMSNorm, rotary position embedding and
/// the SwiGLU gate, with ggml's rounding choices where they change results
/// (sum of squares in double, RoPE angles by repeated multiplication).
enum Elementwise {
    /// `y = x / sqrt(mean(x²) + ε) · weight` for one row of `count` values.
    static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, epsilon: Float, count: Int, into y: UnsafeMutablePointer<Float>
    ) {
        var sum: Double = 0
        for i in 0..<count { sum += Double(x[i] * x[i]) }
        let scale = 1 / sqrtf(Float(sum / Double(count)) + epsilon)
        for i in 0..<count { y[i] = (x[i] * scale) * weight[i] }
    }

    /// Cosines and sines of the RoPE angles of `position`: pair i turns by
    /// position · base^(−2i/dimensions).
    ///
    /// The angle is advanced by multiplying with base^(−2/dimensions) pair after pair, as
    /// ggml does, so that our rotations round like llama.cpp's.
    static func ropeAngles(position: Int, base: Float, dimensions: Int, cos c: UnsafeMutablePointer<Float>, sin s: UnsafeMutablePointer<Float>) {
        let step = powf(base, -2 / Float(dimensions))
        var theta = Float(position)
        for i in 0..<(dimensions / 2) {
            c[i] = cosf(theta)
            s[i] = sinf(theta)
            theta *= step
        }
    }

    /// Rotates the first `dimensions` values of each of `heads` heads (`headSize` apart) in place.
    static func rope(
        _ x: UnsafeMutablePointer<Float>, heads: Int, headSize: Int, dimensions: Int,
        ordering: LlamaConfiguration.RopeOrdering, cos c: UnsafePointer<Float>, sin s: UnsafePointer<Float>
    ) {
        for h in 0..<heads {
            let head = x + h * headSize
            for i in 0..<(dimensions / 2) {
                let (a, b) = ordering == .normal ? (2 * i, 2 * i + 1) : (i, i + dimensions / 2)
                let x0 = head[a]
                let x1 = head[b]
                head[a] = x0 * c[i] - x1 * s[i]
                head[b] = x0 * s[i] + x1 * c[i]
            }
        }
    }

    /// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU), in place.
    static func swiGLU(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = gate[i]
            gate[i] = g / (1 + expf(-g)) * up[i]
        }
    }

    /// `y += x` over `count` values.
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
