import CleaveTensor

/// A Llama-family decoder (Llama, SmolLM, Mistral, Qwen2) running from a GGUF file.
///
/// Weights stay in the memory-mapped file in their quantized form; every product
/// reads them in place (``WeightMatrix``). The model is a ``LlamaTrunk`` (embedding,
/// norms, output head) around one ``LlamaShard`` that holds every head and every MLP
/// row; ``TensorParallelLlama`` is the same trunk around shards on several nodes.
/// One model object serves one generation stream at a time: it owns the scratch
/// buffers of a forward pass (not `Sendable`).
public final class LlamaModel {
    public let configuration: LlamaConfiguration
    public let file: GGUFFile
    /// Most tokens evaluated in one pass; longer inputs are split into passes of this size.
    public let batchSize: Int
    /// Threads of the matrix products and attention.
    public let workers: WorkerTeam
    /// How matrix products treat their inputs (``ActivationPrecision/q8`` unless asked).
    public let precision: ActivationPrecision

    let trunk: LlamaTrunk
    private let shard: LlamaShard

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
        trunk = try LlamaTrunk(file, configuration: c, batchSize: self.batchSize)
        shard = try LlamaShard(
            file, configuration: c, slice: .whole(c), cut: false, workers: workers, batchSize: self.batchSize, precision: precision)
    }

    /// A cache for up to `capacity` positions (default: the model's context length, at most 4096).
    public func makeCache(capacity: Int? = nil) -> KVCache {
        shard.makeCache(capacity: capacity ?? min(configuration.contextLength, 4096))
    }

    /// Runs `tokens` at the positions after those already in `cache`, appends their keys and
    /// values to it, and returns the logits of the last token (`vocabulary` floats).
    ///
    /// - Throws: ``LLMError`` when a token id is out of range or the cache is full.
    public func evaluate(_ tokens: [Int32], cache: KVCache) throws -> [Float] {
        try evaluate(tokens, cache: cache, everyPosition: false)[0]
    }

    /// Like ``evaluate(_:cache:)``, but with `everyPosition` returns the logits after each of
    /// `tokens` (what perplexity needs), else only the last token's (one array).
    public func evaluate(_ tokens: [Int32], cache: KVCache, everyPosition: Bool) throws -> [[Float]] {
        try trunk.validate(tokens, position: cache.count, capacity: cache.capacity)
        var logits: [[Float]] = []
        var start = 0
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + batchSize, tokens.count)])
            let first = cache.count
            trunk.forward(
                chunk, workers: workers,
                attention: { layer, normed, out in shard.attention(layer: layer, input: normed, first: first, cache: cache, into: out) },
                feedForward: { layer, normed, out in shard.feedForward(layer: layer, input: normed, into: out) })
            cache.advance(by: chunk.count)
            start += chunk.count
            if everyPosition { logits += trunk.logits(rows: 0..<chunk.count, workers: workers, precision: precision) }
        }
        return everyPosition ? logits : [trunk.logitsOfLastToken(workers: workers, precision: precision)]
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

// MARK: - The trunk: what is not split

/// Embedding, the norms and the output head: the parts of a Llama model that stay whole
/// (on the coordinator, in tensor parallelism), and the forward pass that threads the
/// residual stream through every block.
final class LlamaTrunk {
    let configuration: LlamaConfiguration
    private let embedding: WeightMatrix
    private let output: WeightMatrix
    private let outputNorm: [Float]
    private let attentionNorms: [[Float]]
    private let feedForwardNorms: [[Float]]
    private let workspace: TrunkWorkspace

    init(_ file: GGUFFile, configuration c: LlamaConfiguration, batchSize: Int) throws {
        configuration = c
        embedding = try WeightMatrix(file, "token_embd.weight", rows: c.vocabulary, columns: c.embedding)
        output =
            file.tensor(named: "output.weight") == nil
            ? embedding : try WeightMatrix(file, "output.weight", rows: c.vocabulary, columns: c.embedding)
        outputNorm = try LlamaModel.vector(file, "output_norm.weight", count: c.embedding)
        attentionNorms = try (0..<c.layers).map { try LlamaModel.vector(file, "blk.\($0).attn_norm.weight", count: c.embedding) }
        feedForwardNorms = try (0..<c.layers).map { try LlamaModel.vector(file, "blk.\($0).ffn_norm.weight", count: c.embedding) }
        workspace = TrunkWorkspace(configuration: c, batch: batchSize)
    }

    /// Checks that `tokens` can run after `position` positions in a cache of `capacity`.
    func validate(_ tokens: [Int32], position: Int, capacity: Int) throws {
        guard !tokens.isEmpty else { throw LLMError.emptyInput }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= configuration.vocabulary }) {
            throw LLMError.tokenOutOfRange(bad, vocabulary: configuration.vocabulary)
        }
        guard position + tokens.count <= capacity else {
            throw LLMError.contextFull(needed: position + tokens.count, capacity: capacity)
        }
    }

    /// One pass over up to a batch of tokens: embedding, then per block the normed residual
    /// goes to `attention` and to `feedForward`, each of which writes the block's whole output
    /// (tokens × embedding, the sum over all slices) into its last argument, added to the
    /// residual here. Leaves the final hidden states in the residual stream.
    func forward(
        _ tokens: [Int32], workers: WorkerTeam,
        attention: (_ layer: Int, _ normed: Activations, _ out: UnsafeMutablePointer<Float>) throws -> Void,
        feedForward: (_ layer: Int, _ normed: Activations, _ out: UnsafeMutablePointer<Float>) throws -> Void
    ) rethrows {
        let w = workspace
        let n = tokens.count
        let d = configuration.embedding
        w.lastTokens = n
        for (t, token) in tokens.enumerated() { embedding.dequantizeRow(Int(token), into: w.residual + t * d) }
        for layer in 0..<configuration.layers {
            normalize(n, attentionNorms[layer])
            try attention(layer, w.normed, w.projected)
            Elementwise.add(w.projected, into: w.residual, count: n * d)
            normalize(n, feedForwardNorms[layer])
            try feedForward(layer, w.normed, w.projected)
            Elementwise.add(w.projected, into: w.residual, count: n * d)
        }
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

    /// Final norm and output head for the last token of the last pass.
    func logitsOfLastToken(workers: WorkerTeam, precision: ActivationPrecision) -> [Float] {
        logits(rows: (workspace.lastTokens - 1)..<workspace.lastTokens, workers: workers, precision: precision)[0]
    }

    /// Final norm and output head for tokens `rows` of the last pass (one product for all).
    func logits(rows: Range<Int>, workers: WorkerTeam, precision: ActivationPrecision) -> [[Float]] {
        let w = workspace
        let d = configuration.embedding
        let v = configuration.vocabulary
        w.normed.reset(tokens: rows.count, columns: d)
        outputNorm.withUnsafeBufferPointer { weight in
            for (index, row) in rows.enumerated() {
                Elementwise.rmsNorm(
                    w.residual + row * d, weight: weight.baseAddress!, epsilon: configuration.rmsEpsilon, count: d, into: w.normed.row(index))
            }
        }
        let all = [Float](unsafeUninitializedCapacity: rows.count * v) { buffer, initialized in
            output.multiply(w.normed, into: buffer.baseAddress!, workers: workers, precision: precision)
            initialized = rows.count * v
        }
        return (0..<rows.count).map { Array(all[($0 * v)..<(($0 + 1) * v)]) }
    }
}

// MARK: - Scratch memory of a pass

/// The trunk's buffers of one pass, sized for `batch` tokens and allocated once per model.
private final class TrunkWorkspace {
    let residual: UnsafeMutablePointer<Float>
    let normed: Activations
    /// The summed output of one block's attention or MLP.
    let projected: UnsafeMutablePointer<Float>
    /// Tokens in the last pass (whose final hidden states `residual` holds).
    var lastTokens = 0

    init(configuration c: LlamaConfiguration, batch: Int) {
        residual = .allocate(capacity: batch * c.embedding)
        projected = .allocate(capacity: batch * c.embedding)
        normed = Activations(tokens: batch, columns: c.embedding)
    }

    deinit {
        residual.deallocate()
        projected.deallocate()
    }
}
