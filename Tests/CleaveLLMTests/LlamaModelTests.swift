import Testing

@testable import CleaveLLM

@Suite struct LlamaModelTests {
    /// Logits after each token, evaluating one token at a time.
    static func stepwise(_ model: LlamaModel, _ tokens: [Int32]) throws -> [[Float]] {
        let cache = model.makeCache(capacity: 64)
        return try tokens.map { try model.evaluate([$0], cache: cache) }
    }

    static func worstError(_ logits: [[Float]], _ reference: [[Double]]) -> (error: Double, scale: Double) {
        var error = 0.0
        var scale = 0.0
        for (row, truth) in zip(logits, reference) {
            for (value, exact) in zip(row, truth) {
                error = max(error, abs(Double(value) - exact))
                scale = max(scale, abs(exact))
            }
        }
        return (error, scale)
    }

    static let tokens: [Int32] = [3, 17, 42, 5, 79, 0, 23, 23, 61, 8, 30, 12]

    @Test(arguments: [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q4_K, .q6_K])
    func floatActivationsMatchADoublePrecisionReference(type: GGMLType) throws {
        let tiny = try TinyLlama.make(weightType: type)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1, precision: .float)
        let (error, scale) = Self.worstError(try Self.stepwise(model, Self.tokens), tiny.referenceLogits(Self.tokens))
        #expect(scale > 1, "logits should not be trivially small")
        #expect(error < 1e-3 * scale, "worst |Δ| \(error) for logits up to \(scale)")
    }

    @Test(arguments: ["llama", "qwen2"], [true, false])
    func architecturesAndOutputHeads(architecture: String, tied: Bool) throws {
        let tiny = try TinyLlama.make(architecture: architecture, weightType: .f32, tiedOutput: tied)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1, precision: .float)
        #expect(model.configuration.ropeOrdering == (architecture == "qwen2" ? .neox : .normal))
        #expect(model.configuration.attentionBias == (architecture == "qwen2"))
        let (error, scale) = Self.worstError(try Self.stepwise(model, Self.tokens), tiny.referenceLogits(Self.tokens))
        #expect(error < 1e-3 * scale, "worst |Δ| \(error) for logits up to \(scale)")
    }

    @Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q4_K, .q6_K])
    func quantizedActivationsStayNearTheReference(type: GGMLType) throws {
        let tiny = try TinyLlama.make(weightType: type)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1)
        let (error, scale) = Self.worstError(try Self.stepwise(model, Self.tokens), tiny.referenceLogits(Self.tokens))
        // 8-bit activations cost 1–5% of the logit scale on these models (more on the wider K-quant
        // ones); QuantizedDotTests checks each kernel exactly, this checks that the model uses them right.
        #expect(error < 0.06 * scale, "worst |Δ| \(error) for logits up to \(scale)")
        #expect(error > 1e-5 * scale, "q8 arithmetic should differ from float64 at all (is the integer path used?)")
    }

    @Test(arguments: [ActivationPrecision.q8, .float], [GGMLType.q4_1, .q8_0, .q4_K])
    func promptInOnePassEqualsTokenByToken(precision: ActivationPrecision, type: GGMLType) throws {
        let tiny = try TinyLlama.make(weightType: type)
        let file = try GGUFFile(bytes: tiny.bytes)
        let stepwise = try Self.stepwise(try LlamaModel(file, threads: 1, precision: precision), Self.tokens)
        for batch in [64, 5, 1] {
            let model = try LlamaModel(file, threads: 2, batchSize: batch, precision: precision)
            let cache = model.makeCache(capacity: 64)
            let last = try model.evaluate(Self.tokens, cache: cache)
            #expect(last == stepwise.last!, "batch size \(batch): the last logits differ from token-by-token evaluation")
            #expect(cache.count == Self.tokens.count)
        }
    }

    @Test func cacheTruncationRegeneratesTheSameLogits() throws {
        let tiny = try TinyLlama.make(weightType: .q8_0)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1)
        let cache = model.makeCache(capacity: 32)
        _ = try model.evaluate(Array(Self.tokens.prefix(6)), cache: cache)
        let first = try model.evaluate([9], cache: cache)
        cache.truncate(to: 6)
        #expect(try model.evaluate([9], cache: cache) == first)
    }

    @Test func badInputsAreNamed() throws {
        let tiny = try TinyLlama.make()
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1)
        let cache = model.makeCache(capacity: 4)
        #expect(throws: LLMError.tokenOutOfRange(80, vocabulary: 80)) { try model.evaluate([1, 80], cache: cache) }
        #expect(throws: LLMError.emptyInput) { try model.evaluate([], cache: cache) }
        #expect(throws: LLMError.contextFull(needed: 5, capacity: 4)) { try model.evaluate([1, 2, 3, 4, 5], cache: cache) }
        #expect(cache.count == 0, "a refused input leaves the cache as it was")
    }

    @Test func unsupportedModelsAreRefusedByName() throws {
        var writer = GGUFWriter()
        writer.set("general.architecture", .string("gpt2"))
        let error = try #require(throws: GGUFError.self) { try LlamaModel(try GGUFFile(bytes: writer.bytes())) }
        #expect(error.kind == .unsupportedArchitecture)
        #expect(error.description.contains("'gpt2'") && error.description.contains("llama"))

        let tiny = try TinyLlama.make()
        let file = try GGUFFile(bytes: tiny.bytes)
        var missing = GGUFWriter()
        for key in file.keys { missing.set(key, file.metadata[key]!) }
        for info in file.tensors where info.name != "blk.1.ffn_up.weight" {
            missing.addTensor(info.name, shape: info.shape, type: .f32, values: tiny.weights[info.name]!)
        }
        let absent = try #require(throws: GGUFError.self) { try LlamaModel(try GGUFFile(bytes: missing.bytes())) }
        #expect(absent.kind == .missingTensor && absent.description.contains("blk.1.ffn_up.weight"))

        var noKey = GGUFWriter()
        for key in file.keys where key != "llama.block_count" { noKey.set(key, file.metadata[key]!) }
        let key = try #require(throws: GGUFError.self) { try LlamaModel(try GGUFFile(bytes: noKey.bytes())) }
        #expect(key.kind == .missingKey && key.description.contains("llama.block_count"))
    }
}
