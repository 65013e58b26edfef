import CleaveTensor

/// A Llama-family decoder (Llama, SmolLM, Mistral, Qwen2) running from a GGUF file.
///
/// Weights stay in the memory-mapped file in their quantized form; every product
/// reads them in place (``WeightMatrix``). One model object serves one generation
/// stream at a time: it owns the scratch buffers of a forward pass (not `Sendable`).
public final class LlamaModel {
    public let configuration: LlamaConfiguration
    public let file: GGUFFile
    /// Most tokens evaluated in one pass; longer inputs are split into passes of this size.
    public let batchSize: Int
    /// Threads of the matrix products and attention.
    public let workers: WorkerTeam
    /// How matrix products treat their inputs (``ActivationPrecision/q8`` unless asked).
    public let precision: ActivationPrecision

    private let embedding: WeightMatrix
    private let output: WeightMatrix
    private let outputNorm: [Float]
    private let blocks: [LlamaBlock]
    private let workspace: Workspace

    /// Maps `path` and checks that it holds a supported model.
    public convenience init(
        contentsOf path: String, threads: Int? = nil, batchSize: Int = 64, precision: ActivationPrecision = .q8
    ) throws {
        try self.init(try GGUFFile(contentsOf: path), threads: threads, batchSize: batchSize, precision: precision)
    }

    /// Binds the weights of `file` (nothing is copied except the small norm vectors).
    ///
    /// - Throws: ``GGUFError`` for an unsupported architecture or tensor type, a missing tensor or
    ///   key, or a tensor of the wrong shape (each naming the tensor or key).
    public init(_ file: GGUFFile, threads: Int? = nil, batchSize: Int = 64, precision: ActivationPrecision = .q8) throws {
        let c = try LlamaConfiguration(file)
        configuration = c
        self.file = file
        self.batchSize = max(1, batchSize)
        self.precision = precision
        workers = WorkerTeam(threads: threads)
        embedding = try WeightMatrix(file, "token_embd.weight", rows: c.vocabulary, columns: c.embedding)
        output =
            file.tensor(named: "output.weight") == nil
            ? embedding : try WeightMatrix(file, "output.weight", rows: c.vocabulary, columns: c.embedding)
        outputNorm = try Self.vector(file, "output_norm.weight", count: c.embedding)
        blocks = try (0..<c.layers).map { try LlamaBlock(file, layer: $0, configuration: c) }
        workspace = Workspace(configuration: c, batch: self.batchSize)
    }

    /// A cache for up to `capacity` positions (default: the model's context length, at most 4096).
    public func makeCache(capacity: Int? = nil) -> KVCache {
        KVCache(
            layers: configuration.layers, width: configuration.kvHeads * configuration.headDimension,
            capacity: max(1, capacity ?? min(configuration.contextLength, 4096)))
    }

    /// Runs `tokens` at the positions after those already in `cache`, appends their keys and
    /// values to it, and returns the logits of the last token (`vocabulary` floats).
    ///
    /// - Throws: ``LLMError`` when a token id is out of range or the cache is full.
    public func evaluate(_ tokens: [Int32], cache: KVCache) throws -> [Float] {
        guard !tokens.isEmpty else { throw LLMError.emptyInput }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= configuration.vocabulary }) {
            throw LLMError.tokenOutOfRange(bad, vocabulary: configuration.vocabulary)
        }
        guard cache.count + tokens.count <= cache.capacity else {
            throw LLMError.contextFull(needed: cache.count + tokens.count, capacity: cache.capacity)
        }
        var start = 0
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + batchSize, tokens.count)])
            forward(chunk, cache: cache)
            start += chunk.count
        }
        return logitsOfLastToken()
    }

    // MARK: - The forward pass

    /// One pass over up to ``batchSize`` tokens: embedding, every block, final norm.
    /// Leaves the final hidden states in the workspace's residual stream.
    private func forward(_ tokens: [Int32], cache: KVCache) {
        let c = configuration
        let w = workspace
        let n = tokens.count
        let d = c.embedding
        let kvWidth = c.kvHeads * c.headDimension
        let first = cache.count
        w.lastTokens = n
        for (t, token) in tokens.enumerated() { embedding.dequantizeRow(Int(token), into: w.residual + t * d) }
        for t in 0..<n {
            Elementwise.ropeAngles(
                position: first + t, base: c.ropeBase, dimensions: c.ropeDimensions,
                cos: w.cos + t * c.ropeDimensions / 2, sin: w.sin + t * c.ropeDimensions / 2)
        }

        for (layer, block) in blocks.enumerated() {
            // Attention: norm → Q, K, V → RoPE → cache → attend → output projection, added to the residual.
            normalize(n, block.attentionNorm)
            block.query.multiply(w.normed, into: w.query, workers: workers, precision: precision)
            block.key.multiply(w.normed, into: w.key, workers: workers, precision: precision)
            block.value.multiply(w.normed, into: w.value, workers: workers, precision: precision)
            if let biases = block.biases {
                for t in 0..<n {
                    Elementwise.add(biases.query, into: w.query + t * d, count: d)
                    Elementwise.add(biases.key, into: w.key + t * kvWidth, count: kvWidth)
                    Elementwise.add(biases.value, into: w.value + t * kvWidth, count: kvWidth)
                }
            }
            for t in 0..<n {
                let (cos, sin) = (w.cos + t * c.ropeDimensions / 2, w.sin + t * c.ropeDimensions / 2)
                Elementwise.rope(
                    w.query + t * d, heads: c.heads, headSize: c.headDimension, dimensions: c.ropeDimensions,
                    ordering: c.ropeOrdering, cos: cos, sin: sin)
                Elementwise.rope(
                    w.key + t * kvWidth, heads: c.kvHeads, headSize: c.headDimension, dimensions: c.ropeDimensions,
                    ordering: c.ropeOrdering, cos: cos, sin: sin)
            }
            cache.store(layer: layer, keys: w.key, values: w.value, tokens: n)
            attend(n, layer: layer, first: first, cache: cache)
            block.attentionOutput.multiply(w.attended, into: w.projected, workers: workers, precision: precision)
            Elementwise.add(w.projected, into: w.residual, count: n * d)

            // MLP: norm → gate and up → SwiGLU → down, added to the residual.
            normalize(n, block.feedForwardNorm)
            w.hidden.reset(tokens: n, columns: c.feedForward)
            block.gate.multiply(w.normed, into: w.hidden.floats, workers: workers, precision: precision)
            block.up.multiply(w.normed, into: w.up, workers: workers, precision: precision)
            workers.parallelFor(n, minimumChunk: 4) { tokens in
                let offset = tokens.lowerBound * c.feedForward
                Elementwise.swiGLU(w.hidden.floats + offset, w.up + offset, count: tokens.count * c.feedForward)
            }
            block.down.multiply(w.hidden, into: w.projected, workers: workers, precision: precision)
            Elementwise.add(w.projected, into: w.residual, count: n * d)
        }
        cache.advance(by: n)
    }

    /// RMSNorm of each residual row times `weight`, into the `normed` activations.
    private func normalize(_ n: Int, _ weight: [Float]) {
        let w = workspace
        let d = configuration.embedding
        w.normed.reset(tokens: n, columns: d)
        weight.withUnsafeBufferPointer { weight in
            for t in 0..<n {
                Elementwise.rmsNorm(
                    w.residual + t * d, weight: weight.baseAddress!, epsilon: configuration.rmsEpsilon, count: d,
                    into: w.normed.row(t))
            }
        }
    }

    /// Attention of each new token over the cache (itself included), heads split across threads.
    private func attend(_ n: Int, layer: Int, first: Int, cache: KVCache) {
        let c = configuration
        let w = workspace
        w.attended.reset(tokens: n, columns: c.embedding)
        workers.parallelFor(n * c.heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: first + n)
            defer { scores.deallocate() }
            for index in range {
                let (t, head) = index.quotientAndRemainder(dividingBy: c.heads)
                Attention.attend(
                    query: w.query + t * c.embedding, cache: cache, layer: layer, positions: first + t + 1,
                    heads: head..<(head + 1), configuration: c, roundQuery: precision == .q8, scores: scores, out: w.attended.row(t))
            }
        }
    }

    /// Final norm and output head for the last token of the last pass.
    private func logitsOfLastToken() -> [Float] {
        let w = workspace
        let d = configuration.embedding
        let last = w.residual + (w.lastTokens - 1) * d
        w.normed.reset(tokens: 1, columns: d)
        outputNorm.withUnsafeBufferPointer { weight in
            Elementwise.rmsNorm(last, weight: weight.baseAddress!, epsilon: configuration.rmsEpsilon, count: d, into: w.normed.row(0))
        }
        return [Float](unsafeUninitializedCapacity: configuration.vocabulary) { buffer, initialized in
            output.multiply(w.normed, into: buffer.baseAddress!, workers: workers, precision: precision)
            initialized = configuration.vocabulary
        }
    }

    /// A float32 vector tensor of `count` elements (norm weights, biases).
    static func vector(_ file: GGUFFile, _ name: String, count: Int) throws -> [Float] {
        guard let info = file.tensor(named: name) else { throw GGUFError(.missingTensor, "the model has no tensor '\(name)'") }
        guard info.shape == [count] else {
            throw GGUFError(.malformed, "tensor '\(name)' has shape \(info.shape), expected [\(count)]")
        }
        return try file.floats(info)
    }
}

// MARK: - Weights of one block

/// The tensors of transformer block `blk.N`.
struct LlamaBlock {
    struct Biases {
        let query: [Float]
        let key: [Float]
        let value: [Float]
    }

    let attentionNorm: [Float]
    let query: WeightMatrix
    let key: WeightMatrix
    let value: WeightMatrix
    let biases: Biases?
    let attentionOutput: WeightMatrix
    let feedForwardNorm: [Float]
    let gate: WeightMatrix
    let up: WeightMatrix
    let down: WeightMatrix

    init(_ file: GGUFFile, layer: Int, configuration c: LlamaConfiguration) throws {
        let p = "blk.\(layer)."
        let kvWidth = c.kvHeads * c.headDimension
        attentionNorm = try LlamaModel.vector(file, p + "attn_norm.weight", count: c.embedding)
        query = try WeightMatrix(file, p + "attn_q.weight", rows: c.embedding, columns: c.embedding)
        key = try WeightMatrix(file, p + "attn_k.weight", rows: kvWidth, columns: c.embedding)
        value = try WeightMatrix(file, p + "attn_v.weight", rows: kvWidth, columns: c.embedding)
        biases =
            c.attentionBias
            ? Biases(
                query: try LlamaModel.vector(file, p + "attn_q.bias", count: c.embedding),
                key: try LlamaModel.vector(file, p + "attn_k.bias", count: kvWidth),
                value: try LlamaModel.vector(file, p + "attn_v.bias", count: kvWidth)) : nil
        attentionOutput = try WeightMatrix(file, p + "attn_output.weight", rows: c.embedding, columns: c.embedding)
        feedForwardNorm = try LlamaModel.vector(file, p + "ffn_norm.weight", count: c.embedding)
        gate = try WeightMatrix(file, p + "ffn_gate.weight", rows: c.feedForward, columns: c.embedding)
        up = try WeightMatrix(file, p + "ffn_up.weight", rows: c.feedForward, columns: c.embedding)
        down = try WeightMatrix(file, p + "ffn_down.weight", rows: c.embedding, columns: c.feedForward)
    }
}

// MARK: - Scratch memory of a pass

/// Buffers of one forward pass, sized for `batch` tokens and allocated once per model.
private final class Workspace {
    let residual: UnsafeMutablePointer<Float>
    let normed: Activations
    let query: UnsafeMutablePointer<Float>
    let key: UnsafeMutablePointer<Float>
    let value: UnsafeMutablePointer<Float>
    let attended: Activations
    let projected: UnsafeMutablePointer<Float>
    let hidden: Activations
    let up: UnsafeMutablePointer<Float>
    let cos: UnsafeMutablePointer<Float>
    let sin: UnsafeMutablePointer<Float>
    /// Tokens in the last pass (whose final hidden states `residual` holds).
    var lastTokens = 0
    private let owned: [UnsafeMutablePointer<Float>]

    init(configuration c: LlamaConfiguration, batch: Int) {
        let kvWidth = c.kvHeads * c.headDimension
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: batch * count) }
        residual = buffer(c.embedding)
        query = buffer(c.embedding)
        key = buffer(kvWidth)
        value = buffer(kvWidth)
        projected = buffer(c.embedding)
        up = buffer(c.feedForward)
        cos = buffer(c.ropeDimensions / 2)
        sin = buffer(c.ropeDimensions / 2)
        owned = [residual, query, key, value, projected, up, cos, sin]
        normed = Activations(tokens: batch, columns: c.embedding)
        attended = Activations(tokens: batch, columns: c.embedding)
        hidden = Activations(tokens: batch, columns: c.feedForward)
    }

    deinit {
        for buffer in owned { buffer.deallocate() }
    }
}
