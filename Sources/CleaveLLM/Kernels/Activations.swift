import CleaveTensor

/// The input of a matrix product: `tokens` rows of `columns` floats, plus their
/// 8-bit quantization for the integer kernels.
///
/// Quantization follows ggml's `Q8_0`/`Q8_1` activations so that our products
/// round as llama.cpp's do: per block of 32, `d = amax / 127` stored as float16,
/// `q = round-half-even(x · 127 / amax)`, and for `Q8_1` also `s = d · Σq` as
/// float16. The integer values are kept widened to 16 bits and split into even
/// and odd elements (`[x0, x2, …, x30]` then `[x1, x3, …, x31]`): that is the order
/// in which the kernels unpack weight nibbles and bytes, so a block's product is a
/// few 16-bit multiplies with no shuffles.
///
/// One buffer serves a whole forward pass: it is allocated for the largest width
/// and token count once and reused (no allocation in the hot loop).
final class Activations {
    let capacity: Int
    let maximumColumns: Int
    private(set) var tokens = 0
    private(set) var columns = 0
    /// `tokens × columns` float32, row-major.
    let floats: UnsafeMutablePointer<Float>
    /// `tokens × columns` widened 8-bit values, even/odd per block.
    let quants: UnsafeMutablePointer<Int16>
    /// Per token and block: `d` (the float16 value, as float).
    let scales: UnsafeMutablePointer<Float>
    /// Per token and block: `s = d · Σq` rounded to float16 (ggml's `Q8_1`).
    let sums: UnsafeMutablePointer<Float>
    /// Per token and block: `Σq` exactly (the K-quant kernels' min terms).
    let integerSums: UnsafeMutablePointer<Float>
    private(set) var isQuantized = false

    init(tokens: Int, columns: Int) {
        capacity = max(1, tokens)
        maximumColumns = columns
        floats = .allocate(capacity: capacity * columns)
        quants = .allocate(capacity: capacity * columns)
        scales = .allocate(capacity: capacity * (columns / 32 + 1))
        sums = .allocate(capacity: capacity * (columns / 32 + 1))
        integerSums = .allocate(capacity: capacity * (columns / 32 + 1))
    }

    deinit {
        floats.deallocate()
        quants.deallocate()
        scales.deallocate()
        sums.deallocate()
        integerSums.deallocate()
    }

    /// Sets the shape for the next product; the float values are then written by the caller.
    func reset(tokens: Int, columns: Int) {
        precondition(tokens <= capacity && columns <= maximumColumns, "activation buffer too small")
        self.tokens = tokens
        self.columns = columns
        isQuantized = false
    }

    /// Row `token` of the float values.
    func row(_ token: Int) -> UnsafeMutablePointer<Float> { floats + token * columns }

    var blocksPerToken: Int { columns / 32 }

    /// Quantizes the float values (once; later calls return at once), tokens split across
    /// `workers`. Needs `columns % 32 == 0`.
    func quantize(workers: WorkerTeam) {
        guard !isQuantized else { return }
        isQuantized = true
        workers.parallelFor(tokens, minimumChunk: 4) { range in quantize(tokens: range) }
    }

    private func quantize(tokens range: Range<Int>) {
        let blocks = blocksPerToken
        for t in range {
            for b in 0..<blocks {
                let x = floats + t * columns + 32 * b
                let q = quants + t * columns + 32 * b
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(x[j])) }
                let d = amax / 127
                let inverse: Float = amax != 0 ? 127 / amax : 0
                var sum: Int32 = 0
                for j in 0..<32 {
                    let value = Int16((x[j] * inverse).rounded(.toNearestOrEven))
                    q[(j & 1) * 16 + j / 2] = value
                    sum += Int32(value)
                }
                scales[t * blocks + b] = Float(Float16(d))
                sums[t * blocks + b] = Float(Float16(d * Float(sum)))
                integerSums[t * blocks + b] = Float(sum)
            }
        }
    }
}
