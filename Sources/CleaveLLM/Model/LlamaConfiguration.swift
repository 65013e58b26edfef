/// The hyperparameters of a Llama-family model, read from `{architecture}.*` GGUF keys.
public struct LlamaConfiguration: Sendable, Equatable {
    /// How RoPE pairs the dimensions of a head.
    public enum RopeOrdering: String, Sendable {
        /// Adjacent pairs (x₀, x₁), (x₂, x₃), … — llama.cpp's converted Llama weights.
        case normal
        /// Halves (xᵢ, xᵢ₊ₙ/₂) — GPT-NeoX style, used by Qwen2.
        case neox
    }

    /// The architecture name (`general.architecture`).
    public var architecture: String
    public var layers: Int
    /// Width of the residual stream.
    public var embedding: Int
    /// Width of the MLP's hidden layer.
    public var feedForward: Int
    public var heads: Int
    /// Key/value heads (fewer than `heads` for grouped-query attention).
    public var kvHeads: Int
    public var headDimension: Int
    /// Leading dimensions of each head that RoPE rotates.
    public var ropeDimensions: Int
    public var ropeBase: Float
    public var ropeOrdering: RopeOrdering
    public var rmsEpsilon: Float
    /// Positions the model was trained for.
    public var contextLength: Int
    public var vocabulary: Int
    /// Whether Q, K and V have bias vectors (Qwen2).
    public var attentionBias: Bool

    /// Architectures this engine runs, with their RoPE ordering and attention biases.
    static let supported: [String: (RopeOrdering, bias: Bool)] = [
        "llama": (.normal, false),
        "mistral": (.normal, false),
        "qwen2": (.neox, true),
    ]

    /// Reads the configuration of `file`.
    ///
    /// - Throws: ``GGUFError`` `unsupportedArchitecture` naming the architecture and the supported
    ///   ones, `missingKey` for a required hyperparameter, `malformed` for inconsistent ones.
    public init(_ file: GGUFFile) throws {
        let architecture = try file.string("general.architecture")
        guard let (ordering, bias) = Self.supported[architecture] else {
            throw GGUFError(
                .unsupportedArchitecture,
                "architecture '\(architecture)' is not supported; supported: \(Self.supported.keys.sorted().joined(separator: ", "))")
        }
        func integer(_ key: String, default value: Int? = nil) throws -> Int {
            if let value, file.metadata["\(architecture).\(key)"] == nil { return value }
            return try file.integer("\(architecture).\(key)")
        }
        self.architecture = architecture
        layers = try integer("block_count")
        embedding = try integer("embedding_length")
        feedForward = try integer("feed_forward_length")
        heads = try integer("attention.head_count")
        kvHeads = try integer("attention.head_count_kv", default: heads)
        guard heads > 0, embedding % heads == 0 else {
            throw GGUFError(.malformed, "embedding_length \(embedding) is not a multiple of head_count \(heads)")
        }
        headDimension = try integer("attention.key_length", default: embedding / heads)
        ropeDimensions = try integer("rope.dimension_count", default: headDimension)
        let base = "\(architecture).rope.freq_base"
        ropeBase = file.metadata[base] == nil ? 10_000 : Float(try file.number(base))
        ropeOrdering = ordering
        rmsEpsilon = Float(try file.number("\(architecture).attention.layer_norm_rms_epsilon"))
        contextLength = try integer("context_length")
        attentionBias = bias
        if let count = file.metadata["\(architecture).vocab_size"]?.integer {
            vocabulary = count
        } else if let embeddingTensor = file.tensor(named: "token_embd.weight"), embeddingTensor.shape.count == 2 {
            vocabulary = embeddingTensor.shape[1]
        } else {
            throw GGUFError.missingKey("\(architecture).vocab_size")
        }
        try validate()
    }

    /// A configuration given field by field (tests and tools that write models).
    public init(
        architecture: String = "llama", layers: Int, embedding: Int, feedForward: Int, heads: Int, kvHeads: Int,
        ropeBase: Float = 10_000, rmsEpsilon: Float = 1e-5, contextLength: Int = 512, vocabulary: Int
    ) {
        self.architecture = architecture
        self.layers = layers
        self.embedding = embedding
        self.feedForward = feedForward
        self.heads = heads
        self.kvHeads = kvHeads
        headDimension = embedding / heads
        ropeDimensions = embedding / heads
        self.ropeBase = ropeBase
        ropeOrdering = Self.supported[architecture]?.0 ?? .normal
        self.rmsEpsilon = rmsEpsilon
        self.contextLength = contextLength
        self.vocabulary = vocabulary
        attentionBias = Self.supported[architecture]?.bias ?? false
    }

    private func validate() throws {
        func check(_ condition: Bool, _ message: String) throws {
            if !condition { throw GGUFError(.malformed, "\(architecture): \(message)") }
        }
        try check(layers > 0 && layers <= 1024, "block_count \(layers) is out of range")
        try check(kvHeads > 0 && heads % kvHeads == 0, "head_count \(heads) is not a multiple of head_count_kv \(kvHeads)")
        try check(heads * headDimension == embedding, "head_count × key_length ≠ embedding_length \(embedding)")
        try check(
            ropeDimensions > 0 && ropeDimensions <= headDimension && ropeDimensions % 2 == 0,
            "rope.dimension_count \(ropeDimensions) must be even and at most the head size \(headDimension)")
        try check(rmsEpsilon > 0, "layer_norm_rms_epsilon must be positive")
        try check(vocabulary > 0 && contextLength > 0 && feedForward > 0, "vocabulary, context and feed-forward sizes must be positive")
    }
}
