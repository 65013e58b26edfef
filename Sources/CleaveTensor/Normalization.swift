#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Batch normalization and softmax on float32 tensors.
public enum Normalization {
    /// Per-channel scale and shift equal to inference-mode batch normalization:
    /// `y = x · scale' + shift'` with `scale' = scale / √(var + ε)` and `shift' = bias − mean · scale'`.
    ///
    /// Returning the folded pair lets graph passes merge it into a preceding convolution.
    public static func foldedBatchNorm(
        scale: [Float], bias: [Float], mean: [Float], variance: [Float], epsilon: Float
    ) -> (scale: [Float], shift: [Float]) {
        var foldedScale = [Float](repeating: 0, count: scale.count)
        var foldedShift = [Float](repeating: 0, count: scale.count)
        for c in scale.indices {
            foldedScale[c] = scale[c] / (variance[c] + epsilon).squareRoot()
            foldedShift[c] = bias[c] - mean[c] * foldedScale[c]
        }
        return (foldedScale, foldedShift)
    }

    /// Applies `y[n, c, …] = x[n, c, …] · scale[c] + shift[c]`.
    public static func channelAffine(
        input: Tensor, scale: [Float], shift: [Float], into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1)
    ) {
        let channels = input.rank > 1 ? input.shape[1] : 1
        let planes = input.rank > 0 ? input.shape[0] * channels : 1
        let size = input.count / max(planes, 1)
        let x = input.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        pool.parallelFor(planes) { range in
            for plane in range {
                let c = plane % channels
                let (a, b) = (scale[c], shift[c])
                let source = x + plane * size
                let destination = y + plane * size
                for index in 0..<size { destination[index] = source[index] * a + b }
            }
        }
    }

    /// Per-channel mean and (biased) variance over the batch and spatial dimensions of `[N, C, …]`.
    public static func channelStatistics(_ input: Tensor) -> (mean: [Float], variance: [Float]) {
        let channels = input.shape[1]
        let planes = input.shape[0] * channels
        let size = input.count / max(planes, 1)
        let x = input.pointer(as: Float.self)
        var sums = [Double](repeating: 0, count: channels)
        var squares = [Double](repeating: 0, count: channels)
        for plane in 0..<planes {
            let c = plane % channels
            let source = x + plane * size
            for index in 0..<size {
                let value = Double(source[index])
                sums[c] += value
                squares[c] += value * value
            }
        }
        let n = Double(input.shape[0] * size)
        let mean = sums.map { Float($0 / n) }
        let variance = (0..<channels).map { c in Float(max(0, squares[c] / n - (sums[c] / n) * (sums[c] / n))) }
        return (mean, variance)
    }

    /// Softmax (or log-softmax) over the middle axis of a tensor seen as `[outer, length, inner]`.
    public static func softmax(
        input: Tensor, outer: Int, length: Int, inner: Int, logarithm: Bool, into output: Tensor,
        pool: ThreadPool = ThreadPool(threads: 1)
    ) {
        let x = input.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        pool.parallelFor(outer * inner, minimumChunk: 64) { range in
            for lane in range {
                let base = (lane / inner) * length * inner + lane % inner
                var maximum = -Float.infinity
                for index in 0..<length { maximum = max(maximum, x[base + index * inner]) }
                var sum: Float = 0
                for index in 0..<length {
                    let e = expf(x[base + index * inner] - maximum)
                    y[base + index * inner] = e
                    sum += e
                }
                if logarithm {
                    let logSum = logf(sum)
                    for index in 0..<length { y[base + index * inner] = x[base + index * inner] - maximum - logSum }
                } else {
                    for index in 0..<length { y[base + index * inner] /= sum }
                }
            }
        }
    }
}
