import CleaveTensor

/// The part of every transformer block that one node computes in tensor parallelism
/// (Megatron's split): whole key/value-head groups of attention and a run of the MLP's
/// hidden rows.
///
/// Q, K, V and gate/up are split by output rows, the attention output and down
/// projections by input columns, so that a node's two products per block need nothing
/// from the other nodes until their partial outputs are summed (the all-reduce).
public struct ShardSlice: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Key/value heads; the query heads of their groups come with them.
    public var kvHeads: Range<Int>
    /// Rows of the MLP's hidden layer.
    public var feedForward: Range<Int>

    public init(kvHeads: Range<Int>, feedForward: Range<Int>) {
        self.kvHeads = kvHeads
        self.feedForward = feedForward
    }

    /// Everything: the single-node model.
    public static func whole(_ c: LlamaConfiguration) -> ShardSlice { ShardSlice(kvHeads: 0..<c.kvHeads, feedForward: 0..<c.feedForward) }

    /// Query heads of this slice's key/value groups.
    public func queryHeads(_ c: LlamaConfiguration) -> Range<Int> {
        let group = c.heads / c.kvHeads
        return (kvHeads.lowerBound * group)..<(kvHeads.upperBound * group)
    }

    public var description: String {
        "kv heads \(kvHeads.lowerBound)..<\(kvHeads.upperBound), ffn rows \(feedForward.lowerBound)..<\(feedForward.upperBound)"
    }
}

/// Computes one ``ShardSlice`` of every block: its heads' attention and its part of the MLP,
/// each ending in a partial output of the full embedding width that the caller sums over
/// all slices and adds to the residual stream.
///
/// The weights are read in place, either as windows of the whole model's tensors or from a
/// slice file whose tensors were cut to the slice (``ShardSliceFile``); either way no weight
/// is copied. One shard serves one generation stream at a time (it owns scratch buffers).
final class LlamaShard {
    let configuration: LlamaConfiguration
    let slice: ShardSlice
    let workers: WorkerTeam
    let precision: ActivationPrecision
    let batchSize: Int
    private let blocks: [SliceBlock]
    private let workspace: ShardWorkspace

    /// Query heads, key/value width and MLP rows of this slice.
    let queryHeads: Int
    let kvWidth: Int

    /// Binds the slice's weights in `file`: windows of the whole tensors, or (with
    /// `cut`) tensors that hold exactly the slice.
    init(
        _ file: GGUFFile, configuration c: LlamaConfiguration, slice: ShardSlice, cut: Bool, workers: WorkerTeam, batchSize: Int,
        precision: ActivationPrecision
    ) throws {
        guard slice.kvHeads.lowerBound >= 0, slice.kvHeads.upperBound <= c.kvHeads, slice.feedForward.lowerBound >= 0,
            slice.feedForward.upperBound <= c.feedForward
        else { throw LLMError.invalidSlice("\(slice) is outside the model's \(c.kvHeads) kv heads and \(c.feedForward) ffn rows") }
        configuration = c
        self.slice = slice
        self.workers = workers
        self.precision = precision
        self.batchSize = max(1, batchSize)
        queryHeads = slice.queryHeads(c).count
        kvWidth = slice.kvHeads.count * c.headDimension
        blocks = try (0..<c.layers).map { try SliceBlock(file, layer: $0, configuration: c, slice: slice, cut: cut) }
        workspace = ShardWorkspace(configuration: c, slice: slice, batch: self.batchSize)
    }

    /// A key/value cache for this slice's heads.
    func makeCache(capacity: Int) -> KVCache {
        KVCache(layers: configuration.layers, width: kvWidth, capacity: max(1, capacity))
    }

    /// Attention of `input.tokens` normed tokens at positions `first…` over `cache` (which
    /// gets their keys and values at those positions): `out` (tokens × embedding) receives
    /// this slice's share of the attention output projection.
    func attention(layer: Int, input: Activations, first: Int, cache: KVCache, into out: UnsafeMutablePointer<Float>) {
        let c = configuration
        let n = input.tokens
        let d = c.embedding
        guard queryHeads > 0 else {
            out.update(repeating: 0, count: n * d)
            return
        }
        let w = workspace
        let block = blocks[layer]
        let queryWidth = queryHeads * c.headDimension
        w.setRopeAngles(first: first, tokens: n)
        block.query.multiply(input, into: w.query, workers: workers, precision: precision)
        block.key.multiply(input, into: w.key, workers: workers, precision: precision)
        block.value.multiply(input, into: w.value, workers: workers, precision: precision)
        if let biases = block.biases {
            for t in 0..<n {
                Elementwise.add(biases.query, into: w.query + t * queryWidth, count: queryWidth)
                Elementwise.add(biases.key, into: w.key + t * kvWidth, count: kvWidth)
                Elementwise.add(biases.value, into: w.value + t * kvWidth, count: kvWidth)
            }
        }
        for t in 0..<n {
            let (cos, sin) = (w.cos + t * c.ropeDimensions / 2, w.sin + t * c.ropeDimensions / 2)
            Elementwise.rope(
                w.query + t * queryWidth, heads: queryHeads, headSize: c.headDimension, dimensions: c.ropeDimensions,
                ordering: c.ropeOrdering, cos: cos, sin: sin)
            Elementwise.rope(
                w.key + t * kvWidth, heads: slice.kvHeads.count, headSize: c.headDimension, dimensions: c.ropeDimensions,
                ordering: c.ropeOrdering, cos: cos, sin: sin)
        }
        cache.store(layer: layer, keys: w.key, values: w.value, tokens: n)
        attend(n, layer: layer, first: first, cache: cache)
        block.attentionOutput.multiply(w.attended, into: out, workers: workers, precision: precision)
    }

    /// The MLP of `input.tokens` normed tokens over this slice's hidden rows: gate and up →
    /// SwiGLU → down; `out` (tokens × embedding) receives this slice's share.
    func feedForward(layer: Int, input: Activations, into out: UnsafeMutablePointer<Float>) {
        let n = input.tokens
        let rows = slice.feedForward.count
        guard rows > 0 else {
            out.update(repeating: 0, count: n * configuration.embedding)
            return
        }
        let w = workspace
        let block = blocks[layer]
        w.hidden.reset(tokens: n, columns: rows)
        block.gate.multiply(input, into: w.hidden.floats, workers: workers, precision: precision)
        block.up.multiply(input, into: w.up, workers: workers, precision: precision)
        workers.parallelFor(n, minimumChunk: 4) { tokens in
            let offset = tokens.lowerBound * rows
            Elementwise.swiGLU(w.hidden.floats + offset, w.up + offset, count: tokens.count * rows)
        }
        block.down.multiply(w.hidden, into: out, workers: workers, precision: precision)
    }

    /// Attention of each new token over the cache (itself included), heads split across threads.
    private func attend(_ n: Int, layer: Int, first: Int, cache: KVCache) {
        let c = configuration
        let w = workspace
        let heads = queryHeads
        let width = heads * c.headDimension
        w.attended.reset(tokens: n, columns: width)
        workers.parallelFor(n * heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: first + n)
            defer { scores.deallocate() }
            for index in range {
                let (t, head) = index.quotientAndRemainder(dividingBy: heads)
                Attention.attend(
                    query: w.query + t * width, cache: cache, layer: layer, positions: first + t + 1,
                    heads: head..<(head + 1), configuration: c, roundQuery: precision == .q8, scores: scores, out: w.attended.row(t))
            }
        }
    }

    /// Bytes of weights this shard reads per token (its matrices, every block).
    var weightBytes: Int { blocks.reduce(0) { $0 + $1.weightBytes } }
}

// MARK: - Weights of one block's slice

/// The tensors of block `blk.N` that a slice uses.
struct SliceBlock {
    struct Biases {
        let query: [Float]
        let key: [Float]
        let value: [Float]
    }

    let query: WeightMatrix
    let key: WeightMatrix
    let value: WeightMatrix
    let biases: Biases?
    let attentionOutput: WeightMatrix
    let gate: WeightMatrix
    let up: WeightMatrix
    let down: WeightMatrix

    init(_ file: GGUFFile, layer: Int, configuration c: LlamaConfiguration, slice: ShardSlice, cut: Bool) throws {
        let p = "blk.\(layer)."
        let d = c.headDimension
        let queryRows = (slice.queryHeads(c).lowerBound * d)..<(slice.queryHeads(c).upperBound * d)
        let kvRows = (slice.kvHeads.lowerBound * d)..<(slice.kvHeads.upperBound * d)
        let ffRows = slice.feedForward
        /// A matrix of `rows × columns` in the whole model, of which the slice uses a window.
        func matrix(_ name: String, rows: Int, _ rowWindow: Range<Int>?, columns: Int, _ columnWindow: Range<Int>?) throws -> WeightMatrix {
            if cut {
                return try WeightMatrix(file, p + name, rows: rowWindow?.count ?? rows, columns: columnWindow?.count ?? columns)
            }
            return try WeightMatrix(file, p + name, rows: rows, columns: columns, rowWindow: rowWindow, columnWindow: columnWindow)
        }
        /// A bias vector of the whole model's `count`, of which the slice uses `window`.
        func vector(_ name: String, count: Int, _ window: Range<Int>) throws -> [Float] {
            let values = try LlamaModel.vector(file, p + name, count: cut ? window.count : count)
            return cut ? values : Array(values[window])
        }
        query = try matrix("attn_q.weight", rows: c.embedding, queryRows, columns: c.embedding, nil)
        key = try matrix("attn_k.weight", rows: c.kvHeads * d, kvRows, columns: c.embedding, nil)
        value = try matrix("attn_v.weight", rows: c.kvHeads * d, kvRows, columns: c.embedding, nil)
        biases =
            c.attentionBias
            ? Biases(
                query: try vector("attn_q.bias", count: c.embedding, queryRows),
                key: try vector("attn_k.bias", count: c.kvHeads * d, kvRows),
                value: try vector("attn_v.bias", count: c.kvHeads * d, kvRows)) : nil
        attentionOutput = try matrix("attn_output.weight", rows: c.embedding, nil, columns: c.embedding, queryRows)
        gate = try matrix("ffn_gate.weight", rows: c.feedForward, ffRows, columns: c.embedding, nil)
        up = try matrix("ffn_up.weight", rows: c.feedForward, ffRows, columns: c.embedding, nil)
        down = try matrix("ffn_down.weight", rows: c.embedding, nil, columns: c.feedForward, ffRows)
    }

    var weightBytes: Int {
        [query, key, value, attentionOutput, gate, up, down].reduce(0) { total, m in total + m.rows * (m.type.byteCount(elements: m.columns) ?? 0) }
    }
}

// MARK: - Scratch memory of a slice

/// Buffers of one slice's products, sized for `batch` tokens and allocated once per shard.
private final class ShardWorkspace {
    let query: UnsafeMutablePointer<Float>
    let key: UnsafeMutablePointer<Float>
    let value: UnsafeMutablePointer<Float>
    let attended: Activations
    let hidden: Activations
    let up: UnsafeMutablePointer<Float>
    let cos: UnsafeMutablePointer<Float>
    let sin: UnsafeMutablePointer<Float>
    private let configuration: LlamaConfiguration
    /// Positions whose RoPE angles `cos` and `sin` hold.
    private var anglesFor: (first: Int, tokens: Int)?
    private let owned: [UnsafeMutablePointer<Float>]

    init(configuration c: LlamaConfiguration, slice: ShardSlice, batch: Int) {
        configuration = c
        let queryWidth = slice.queryHeads(c).count * c.headDimension
        let kvWidth = slice.kvHeads.count * c.headDimension
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(1, batch * count)) }
        query = buffer(queryWidth)
        key = buffer(kvWidth)
        value = buffer(kvWidth)
        up = buffer(slice.feedForward.count)
        cos = buffer(c.ropeDimensions / 2)
        sin = buffer(c.ropeDimensions / 2)
        owned = [query, key, value, up, cos, sin]
        attended = Activations(tokens: batch, columns: queryWidth)
        hidden = Activations(tokens: batch, columns: slice.feedForward.count)
    }

    deinit {
        for buffer in owned { buffer.deallocate() }
    }

    /// RoPE angles of positions `first..<first + tokens` (computed once per pass, not per layer).
    func setRopeAngles(first: Int, tokens: Int) {
        if let anglesFor, anglesFor == (first, tokens) { return }
        let c = configuration
        for t in 0..<tokens {
            Elementwise.ropeAngles(
                position: first + t, base: c.ropeBase, dimensions: c.ropeDimensions,
                cos: cos + t * c.ropeDimensions / 2, sin: sin + t * c.ropeDimensions / 2)
        }
        anglesFor = (first, tokens)
    }
}
