#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Causal grouped-query attention of one query position over the cached keys and values.
///
/// The query is rounded to float16 before the dot products, as llama.cpp's CPU
/// attention does with a float16 cache; scores, softmax and the weighted sum of
/// values are float32.
enum Attention {
    /// `out[h] = Σ_j softmax_j(q_h · k_j / √d) · v_j` over positions `0..<positions`,
    /// for query heads `heads` (a range, so that threads can split them).
    static func attend(
        query: UnsafePointer<Float>, cache: KVCache, layer: Int, positions: Int, heads: Range<Int>,
        configuration c: LlamaConfiguration, scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>
    ) {
        let d = c.headDimension
        let group = c.heads / c.kvHeads
        let scale = 1 / sqrtf(Float(d))
        for h in heads {
            let kvOffset = (h / group) * d
            let q = query + h * d
            withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { q16 in
                for i in 0..<d { q16[i] = Float(Float16(q[i])) }
                scoreKeys(q16.baseAddress!, cache: cache, layer: layer, kvOffset: kvOffset, positions: positions, d: d, scale: scale, scores: scores)
            }
            var maximum = -Float.infinity
            for j in 0..<positions { maximum = max(maximum, scores[j]) }
            var total: Float = 0
            for j in 0..<positions {
                scores[j] = expf(scores[j] - maximum)
                total += scores[j]
            }
            let o = out + h * d
            for i in 0..<d { o[i] = 0 }
            for j in 0..<positions {
                let v = cache.value(layer, j) + kvOffset
                let weight = scores[j] / total
                for i in 0..<d { o[i] += weight * Float(v[i]) }
            }
        }
    }

    /// `scores[j] = q · k_j · scale` for the cached keys of one key/value head.
    private static func scoreKeys(
        _ q: UnsafePointer<Float>, cache: KVCache, layer: Int, kvOffset: Int, positions: Int, d: Int, scale: Float,
        scores: UnsafeMutablePointer<Float>
    ) {
        for j in 0..<positions {
            let k = cache.key(layer, j) + kvOffset
            var dot: Float = 0
            for i in 0..<d { dot += q[i] * Float(k[i]) }
            scores[j] = dot * scale
        }
    }
}
