#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Causal grouped-query attention of one query position over the cached keys and values.
///
/// With `roundQuery` the query is rounded to float16 before the dot products, as
/// llama.cpp's CPU attention does with a float16 cache; scores, softmax and the
/// weighted sum of values are float32.
enum Attention {
    /// `out[h] = Σ_j softmax_j(q_h · k_j / √d) · v_j` over positions `0..<positions`,
    /// for query heads `heads` (a range, so that threads can split them).
    static func attend(
        query: UnsafePointer<Float>, cache: KVCache, layer: Int, positions: Int, heads: Range<Int>,
        configuration c: LlamaConfiguration, roundQuery: Bool, scores: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>
    ) {
        let d = c.headDimension
        let group = c.heads / c.kvHeads
        let scale = 1 / sqrtf(Float(d))
        for h in heads {
            let kvOffset = (h / group) * d
            let q = query + h * d
            withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { q16 in
                for i in 0..<d { q16[i] = roundQuery ? Float(Float16(q[i])) : q[i] }
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
                accumulate(cache.value(layer, j) + kvOffset, weight: scores[j] / total, into: o, count: d)
            }
        }
    }

    /// `scores[j] = q · k_j · scale` for the cached keys of one key/value head.
    private static func scoreKeys(
        _ q: UnsafePointer<Float>, cache: KVCache, layer: Int, kvOffset: Int, positions: Int, d: Int, scale: Float,
        scores: UnsafeMutablePointer<Float>
    ) {
        for j in 0..<positions {
            scores[j] = dot(q, cache.key(layer, j) + kvOffset, count: d) * scale
        }
    }

    /// Σ q[i]·k[i] with k in float16, eight lanes at a time.
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float16>, count: Int) -> Float {
        var accumulator = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let keys = SIMD8<Float>(UnsafeRawPointer(k + i).loadUnaligned(as: SIMD8<Float16>.self))
            accumulator.addProduct(UnsafeRawPointer(q + i).loadUnaligned(as: SIMD8<Float>.self), keys)
            i += 8
        }
        var total = accumulator.sum()
        while i < count {
            total += q[i] * Float(k[i])
            i += 1
        }
        return total
    }

    /// `o += weight · v` with v in float16.
    @inline(__always)
    static func accumulate(_ v: UnsafePointer<Float16>, weight: Float, into o: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let w = SIMD8<Float>(repeating: weight)
        while i + 8 <= count {
            let values = SIMD8<Float>(UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float16>.self))
            var sum = UnsafeRawPointer(o + i).loadUnaligned(as: SIMD8<Float>.self)
            sum.addProduct(w, values)
            UnsafeMutableRawPointer(o + i).storeBytes(of: sum, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            o[i] += weight * Float(v[i])
            i += 1
        }
    }
}
