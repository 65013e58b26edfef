import CleaveSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Perplexity over a text the way llama.cpp's `llama-perplexity` measures it, so that the two
/// engines can be compared on the same windows: the tokens are cut into chunks of `context`
/// tokens (the remainder dropped), the first token of each chunk is replaced by BOS when the
/// tokenizer adds one, each chunk is evaluated from an empty context, and only the second half
/// of each chunk is scored (every scored token has at least `context / 2` tokens before it).
///
/// With a reference (`llama-perplexity --kl-divergence-base FILE`, ``LlamaCppLogits``), the
/// chunks are the reference's tokens and each scored position also gives the KL divergence
/// of our next-token distribution from llama.cpp's and whether the two agree on the top token.
public struct Perplexity: Sendable {
    /// exp(mean negative log-likelihood) of the scored tokens.
    public var perplexity: Double
    public var scoredTokens: Int
    public var chunks: Int
    /// Mean KL(llama.cpp ‖ ours) in nats, and the fraction of positions with the same top token.
    public var meanKL: Double?
    public var sameTop: Double?
    /// llama.cpp's own perplexity over the same positions, from the reference file.
    public var referencePerplexity: Double?

    /// Chunks of `tokens` as llama-perplexity makes them.
    public static func chunks(_ tokens: [Int32], context: Int, bos: Int32?) -> [[Int32]] {
        stride(from: 0, to: tokens.count / context * context, by: context).map { start in
            var chunk = Array(tokens[start..<(start + context)])
            if let bos { chunk[0] = bos }
            return chunk
        }
    }

    /// Measures `model` over `chunks` (each `context` tokens); `progress` is called after each chunk.
    public static func measure(
        _ model: any TokenPredictor, chunks: [[Int32]], reference: LlamaCppLogits? = nil, progress: (Int, Double) -> Void = { _, _ in }
    ) throws -> Perplexity {
        var nll = 0.0
        var referenceNLL = 0.0
        var kl = 0.0
        var same = 0
        var scored = 0
        for (index, chunk) in chunks.enumerated() {
            let context = chunk.count
            let first = context / 2
            model.reset()
            _ = try model.evaluate(Array(chunk[0..<first]))
            // Logits after positions first … context − 2 predict tokens first + 1 … context − 1.
            let logits = try model.evaluate(Array(chunk[first..<(context - 1)]), everyPosition: true)
            for (offset, row) in logits.enumerated() {
                let target = Int(chunk[first + offset + 1])
                let logProbabilities = logSoftmax(row)
                nll -= logProbabilities[target]
                if let reference {
                    let base = try reference.logProbabilities(chunk: index, position: offset)
                    referenceNLL -= Double(base[target])
                    var sum = 0.0
                    for i in base.indices where base[i] > -16 {
                        sum += Double(expf(base[i])) * (Double(base[i]) - logProbabilities[i])
                    }
                    kl += sum
                    if argmax(base) == argmax(logProbabilities) { same += 1 }
                }
                scored += 1
            }
            progress(index + 1, exp(nll / Double(scored)))
        }
        let count = Double(max(scored, 1))
        return Perplexity(
            perplexity: exp(nll / count), scoredTokens: scored, chunks: chunks.count, meanKL: reference.map { _ in kl / count },
            sameTop: reference.map { _ in Double(same) / count }, referencePerplexity: reference.map { _ in exp(referenceNLL / count) })
    }

    /// log softmax in double precision.
    static func logSoftmax(_ logits: [Float]) -> [Double] {
        let maximum = Double(logits.max() ?? 0)
        var total = 0.0
        for value in logits { total += exp(Double(value) - maximum) }
        let shift = maximum + log(total)
        return logits.map { Double($0) - shift }
    }

    static func argmax<T: Comparable>(_ values: [T]) -> Int { values.indices.max { values[$0] < values[$1] } ?? 0 }
}

/// The logits file `llama-perplexity --kl-divergence-base FILE` writes: `_logits_`, n_ctx,
/// n_vocab, n_chunk (int32 each), the chunks' tokens (n_chunk × n_ctx int32), then for every
/// scored position (n_ctx − 1 − n_ctx/2 per chunk) its log-probabilities: two float32 (scale,
/// minimum) and n_vocab uint16 levels padded to an even count, log p = scale · level + minimum.
public struct LlamaCppLogits: Sendable {
    public let context: Int
    public let vocabulary: Int
    public let chunkCount: Int
    /// Tokens of every chunk (BOS not yet substituted).
    public let tokens: [Int32]
    private let file: MappedFile
    private let dataOffset: Int
    private let recordBytes: Int

    public init(contentsOf path: String) throws {
        do {
            file = try MappedFile(path: path)
        } catch {
            throw LLMError(.invalidPlan, "cannot open the llama.cpp logits file \(path): \(error.reason)")
        }
        var reader = ByteReader(file.buffer)
        do {
            guard Array(try reader.take(8)) == Array("_logits_".utf8) else {
                throw LLMError(.invalidPlan, "\(path) is not a llama-perplexity logits file (no _logits_ magic)")
            }
            context = Int(try reader.integer(Int32.self))
            vocabulary = Int(try reader.integer(Int32.self))
            chunkCount = Int(try reader.integer(Int32.self))
            guard context > 1, vocabulary > 0, chunkCount >= 0, chunkCount * context < 1 << 28 else {
                throw LLMError(.invalidPlan, "\(path): context \(context), vocabulary \(vocabulary), \(chunkCount) chunks out of range")
            }
            tokens = try (0..<(chunkCount * context)).map { _ in try reader.integer(Int32.self) }
        } catch let error as ByteReadError {
            throw LLMError(.invalidPlan, "\(path) is truncated: \(error)")
        }
        dataOffset = reader.offset
        recordBytes = (2 * ((vocabulary + 1) / 2) + 4) * 2
        let needed = dataOffset + chunkCount * (context - 1 - context / 2) * recordBytes
        guard file.count >= needed else {
            throw LLMError(.invalidPlan, "\(path) has \(file.count) bytes; its header promises \(needed)")
        }
    }

    /// The chunks, with BOS in front when the model adds one (as llama-perplexity evaluated them).
    public func chunks(bos: Int32?) -> [[Int32]] { Perplexity.chunks(tokens, context: context, bos: bos) }

    /// log-probabilities at scored `position` (0-based from the middle of the chunk) of `chunk`.
    func logProbabilities(chunk: Int, position: Int) throws -> [Float] {
        let record = dataOffset + (chunk * (context - 1 - context / 2) + position) * recordBytes
        let base = file.buffer.baseAddress! + record
        let scale = base.loadUnaligned(as: Float.self)
        let minimum = base.loadUnaligned(fromByteOffset: 4, as: Float.self)
        return (0..<vocabulary).map { scale * Float(base.loadUnaligned(fromByteOffset: 8 + 2 * $0, as: UInt16.self)) + minimum }
    }
}
