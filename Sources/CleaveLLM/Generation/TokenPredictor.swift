/// A model with its context: evaluates tokens after the positions it holds and returns the
/// next token's logits. A single-node model with its cache (``LlamaSession``) and a
/// tensor-parallel one (``TensorParallelLlama``) both are one; ``TextGenerator`` runs either.
public protocol TokenPredictor: AnyObject {
    var configuration: LlamaConfiguration { get }
    /// The model file (its metadata names the end-of-turn tokens).
    var file: GGUFFile { get }
    /// Positions evaluated so far.
    var position: Int { get }
    /// Positions the context holds.
    var capacity: Int { get }
    /// Forgets every position (a new conversation).
    func reset()
    /// Runs `tokens` after the positions held and returns the logits of the last one.
    func evaluate(_ tokens: [Int32]) throws -> [Float]
    /// Runs `tokens`; with `everyPosition` returns the logits after each of them.
    func evaluate(_ tokens: [Int32], everyPosition: Bool) throws -> [[Float]]
}

/// A single-node ``LlamaModel`` with one KV cache.
public final class LlamaSession: TokenPredictor {
    public let model: LlamaModel
    public let cache: KVCache

    public init(model: LlamaModel, contextLength: Int? = nil) {
        self.model = model
        cache = model.makeCache(capacity: contextLength)
    }

    public var configuration: LlamaConfiguration { model.configuration }
    public var file: GGUFFile { model.file }
    public var position: Int { cache.count }
    public var capacity: Int { cache.capacity }
    public func reset() { cache.reset() }
    public func evaluate(_ tokens: [Int32]) throws -> [Float] { try model.evaluate(tokens, cache: cache) }
    public func evaluate(_ tokens: [Int32], everyPosition: Bool) throws -> [[Float]] {
        try model.evaluate(tokens, cache: cache, everyPosition: everyPosition)
    }
}

extension TensorParallelLlama: TokenPredictor {}
