import CleaveSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How the next token is chosen from the logits.
///
/// The defaults are llama.cpp's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no
/// repetition penalty), applied in its order: repetition penalty, top-k, top-p, min-p,
/// temperature, then a draw. Temperature 0 means greedy (the highest logit; the
/// lowest id on a tie).
public struct SamplingParameters: Sendable, Equatable {
    public var temperature: Float = 0.8
    /// Keep the k most likely tokens (0: all).
    public var topK: Int = 40
    /// Keep the most likely tokens whose probabilities sum to at least p (1: all).
    public var topP: Float = 0.95
    /// Drop tokens less likely than min-p × the most likely one (0: none).
    public var minP: Float = 0.05
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1: off).
    public var repetitionPenalty: Float = 1
    /// How many recent tokens the penalty looks at.
    public var repetitionWindow: Int = 64
    /// Seed of the draw; the same seed, model and prompt give the same text.
    public var seed: UInt64 = 0

    public init() {}

    /// Greedy decoding.
    public static var greedy: SamplingParameters {
        var parameters = SamplingParameters()
        parameters.temperature = 0
        return parameters
    }

    /// Checks the ranges; the message names the parameter.
    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw LLMError(.invalidSampling, message) } }
        try check(temperature >= 0 && temperature.isFinite, "temperature must be ≥ 0, it is \(temperature)")
        try check(topK >= 0, "top-k must be ≥ 0, it is \(topK)")
        try check(topP > 0 && topP <= 1, "top-p must be in (0, 1], it is \(topP)")
        try check(minP >= 0 && minP < 1, "min-p must be in [0, 1), it is \(minP)")
        try check(repetitionPenalty > 0 && repetitionPenalty.isFinite, "repetition penalty must be > 0, it is \(repetitionPenalty)")
        try check(repetitionWindow >= 0, "repetition window must be ≥ 0, it is \(repetitionWindow)")
    }
}

/// Chooses tokens from logits with a seeded generator, so runs repeat.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var random: SeededGenerator

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        random = SeededGenerator(seed: parameters.seed)
    }

    /// The index of the largest logit (the lowest on a tie).
    public static func argmax(_ logits: [Float]) -> Int32 {
        Int32(Classification.argmax(logits) ?? 0)
    }

    /// The next token after `history` (the tokens so far, for the repetition penalty).
    public mutating func sample(_ logits: [Float], history: [Int32] = []) -> Int32 {
        var logits = logits
        if parameters.repetitionPenalty != 1 {
            for token in Set(history.suffix(parameters.repetitionWindow)) where Int(token) < logits.count {
                let value = logits[Int(token)]
                logits[Int(token)] = value > 0 ? value / parameters.repetitionPenalty : value * parameters.repetitionPenalty
            }
        }
        if parameters.temperature == 0 { return Self.argmax(logits) }

        // Candidates, most likely first; top-k keeps the first k.
        var candidates = Array(0..<logits.count)
        candidates.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if parameters.topK > 0 { candidates.removeSubrange(min(parameters.topK, candidates.count)...) }

        // Top-p on the untempered distribution.
        let top = logits[candidates[0]]
        if parameters.topP < 1 {
            let weights = candidates.map { expf(logits[$0] - top) }
            let total = weights.reduce(0, +)
            var cumulative: Float = 0
            var keep = candidates.count
            for (i, weight) in weights.enumerated() {
                cumulative += weight / total
                if cumulative >= parameters.topP {
                    keep = i + 1
                    break
                }
            }
            candidates.removeSubrange(keep...)
        }
        // Min-p: p ≥ min-p · p_max ⇔ logit ≥ max + ln(min-p).
        if parameters.minP > 0 {
            let threshold = top + logf(parameters.minP)
            candidates = candidates.filter { logits[$0] >= threshold }
        }

        // Temperature, then a draw.
        let weights = candidates.map { expf((logits[$0] - top) / parameters.temperature) }
        let total = weights.reduce(0, +)
        var target = random.uniformFloat() * total
        for (i, weight) in weights.enumerated() {
            target -= weight
            if target < 0 { return Int32(candidates[i]) }
        }
        return Int32(candidates[candidates.count - 1])
    }
}
