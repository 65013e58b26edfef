import CleaveSupport

/// Produces text from a prompt one token at a time: prompt in one batched pass,
/// then sample → evaluate → sample… until an end-of-generation token or the limit.
public final class TextGenerator {
    public let model: any TokenPredictor
    public let tokenizer: Tokenizer
    /// Tokens that end a reply: the end-of-sequence and end-of-turn tokens.
    public let stopTokens: Set<Int32>

    /// Timings and counts of one ``generate(prompt:maxTokens:sampling:onText:)`` call.
    public struct Summary: Sendable {
        public var promptTokens: Int
        public var generated: [Int32]
        /// Why generation ended: "stop token", "max tokens" or "context full".
        public var reason: String
        /// Seconds for the prompt pass and for all decode steps.
        public var promptSeconds: Double
        public var decodeSeconds: Double
        /// Logits after the prompt (before the first generated token).
        public var firstLogits: [Float]
    }

    /// A generator for a single-node model with a cache of `contextLength` positions.
    public convenience init(model: LlamaModel, tokenizer: Tokenizer, contextLength: Int? = nil) {
        self.init(model: LlamaSession(model: model, contextLength: contextLength), tokenizer: tokenizer)
    }

    /// A generator for any model with its context (single-node or tensor-parallel).
    public init(model: any TokenPredictor, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
        var stops = Set<Int32>()
        if let eos = tokenizer.eos { stops.insert(eos) }
        if let eot = model.file.metadata["tokenizer.ggml.eot_token_id"]?.integer.flatMap({ Int32(exactly: $0) }) { stops.insert(eot) }
        for (id, text) in tokenizer.tokens.enumerated() where Self.endOfTurnTexts.contains(text) { stops.insert(Int32(id)) }
        stopTokens = stops
    }

    /// Texts of end-of-turn tokens in common chat vocabularies.
    static let endOfTurnTexts: Set<String> = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"]

    /// Generates after `prompt` (token ids), calling `onText` with each piece of text as soon
    /// as it is whole UTF-8; `onText` returns false to stop early. Starts a new context.
    @discardableResult
    public func generate(
        prompt: [Int32], maxTokens: Int, sampling: SamplingParameters, onText: (String) -> Bool = { _ in true }
    ) throws -> Summary {
        try sampling.validate()
        model.reset()
        var sampler = Sampler(sampling)
        let clock = ContinuousClock()
        let promptStart = clock.now
        var logits = try model.evaluate(prompt)
        var summary = Summary(
            promptTokens: prompt.count, generated: [], reason: "max tokens",
            promptSeconds: (clock.now - promptStart).seconds, decodeSeconds: 0, firstLogits: logits)
        var history = prompt
        var pending: [UInt8] = []
        let decodeStart = clock.now
        while summary.generated.count < maxTokens {
            let token = sampler.sample(logits, history: history)
            if stopTokens.contains(token) {
                summary.reason = "stop token"
                break
            }
            summary.generated.append(token)
            history.append(token)
            pending += tokenizer.decodeBytes([token])
            let complete = Self.completeUTF8Prefix(pending)
            if complete > 0 {
                let keepGoing = onText(String(decoding: pending[..<complete], as: UTF8.self))
                pending.removeFirst(complete)
                if !keepGoing { break }
            }
            guard summary.generated.count < maxTokens else { break }
            guard model.position < model.capacity else {
                summary.reason = "context full"
                break
            }
            logits = try model.evaluate([token])
        }
        if !pending.isEmpty { _ = onText(String(decoding: pending, as: UTF8.self)) }
        summary.decodeSeconds = (clock.now - decodeStart).seconds
        return summary
    }

    /// Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence.
    static func completeUTF8Prefix(_ bytes: [UInt8]) -> Int {
        var start = bytes.count - 1
        while start >= 0 && start >= bytes.count - 4 {
            let byte = bytes[start]
            if byte & 0xC0 != 0x80 {
                let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                return start + length <= bytes.count ? bytes.count : start
            }
            start -= 1
        }
        return bytes.count
    }
}
