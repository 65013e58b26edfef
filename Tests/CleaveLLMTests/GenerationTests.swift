import Foundation
import Testing

@testable import CleaveLLM

@Suite struct SamplerTests {
    static let logits: [Float] = [1.0, 3.0, 3.0, 0.5, -2.0, 2.9]

    /// Sampling at `temperature` with every filter off.
    static func unfiltered(temperature: Float, seed: UInt64) -> SamplingParameters {
        var parameters = SamplingParameters()
        parameters.temperature = temperature
        parameters.topK = 0
        parameters.topP = 1
        parameters.minP = 0
        parameters.seed = seed
        return parameters
    }

    @Test func greedyTakesTheHighestLogitAndTheLowestIdOnATie() {
        var sampler = Sampler(.greedy)
        #expect(sampler.sample(Self.logits) == 1)
        #expect(Sampler.argmax([0, 5, 5]) == 1)
    }

    @Test func theSameSeedGivesTheSameDraws() {
        var parameters = Self.unfiltered(temperature: 1.5, seed: 99)
        var a = Sampler(parameters)
        var b = Sampler(parameters)
        let first = (0..<50).map { _ in a.sample(Self.logits) }
        #expect(first == (0..<50).map { _ in b.sample(Self.logits) })
        parameters.seed = 100
        var c = Sampler(parameters)
        #expect(first != (0..<50).map { _ in c.sample(Self.logits) })
    }

    @Test func drawsFollowTheSoftmaxAtTemperatureOne() {
        var sampler = Sampler(Self.unfiltered(temperature: 1, seed: 5))
        var counts = [Int](repeating: 0, count: Self.logits.count)
        let draws = 40_000
        for _ in 0..<draws { counts[Int(sampler.sample(Self.logits))] += 1 }
        let weights = Self.logits.map { exp(Double($0)) }
        let total = weights.reduce(0, +)
        for (i, weight) in weights.enumerated() {
            let expected = weight / total
            let observed = Double(counts[i]) / Double(draws)
            #expect(abs(observed - expected) < 0.01, "token \(i): observed \(observed), expected \(expected)")
        }
    }

    @Test func filtersKeepOnlyWhatTheyShould() {
        var parameters = SamplingParameters()
        parameters.temperature = 5
        parameters.seed = 1
        parameters.topK = 2
        parameters.topP = 1
        parameters.minP = 0
        var topK = Sampler(parameters)
        #expect(Set((0..<300).map { _ in topK.sample(Self.logits) }) == [1, 2])

        parameters.topK = 0
        parameters.minP = 0.5  // p ≥ 0.5·p_max ⇔ logit ≥ 3 − ln 2 ≈ 2.31: tokens 1, 2, 5
        var minP = Sampler(parameters)
        #expect(Set((0..<300).map { _ in minP.sample(Self.logits) }) == [1, 2, 5])

        parameters.minP = 0
        parameters.topP = 0.5  // softmax: tokens 1 and 2 hold 0.30 each
        var topP = Sampler(parameters)
        #expect(Set((0..<300).map { _ in topP.sample(Self.logits) }) == [1, 2])
    }

    @Test func repetitionPenaltyMovesGreedyAwayFromRecentTokens() {
        var parameters = SamplingParameters.greedy
        parameters.repetitionPenalty = 1.5
        var sampler = Sampler(parameters)
        #expect(sampler.sample(Self.logits, history: [1, 2]) == 5)
        #expect(sampler.sample(Self.logits, history: [4]) == 1)
    }

    @Test func invalidParametersAreNamed() {
        var parameters = SamplingParameters()
        parameters.topP = 0
        #expect(throws: LLMError.self) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.temperature = -1
        let error = try? #require(throws: LLMError.self) { try parameters.validate() }
        #expect(error?.description.contains("temperature") == true)
    }
}

@Suite struct ChatTemplateTests {
    @Test func chatMLWithTheTemplatesDefaultSystemMessage() throws {
        var writer = GGUFWriter()
        writer.set(
            "tokenizer.chat_template",
            .string(
                "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                    + "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
                    + "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                    + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"))
        let template = try #require(ChatTemplate(try GGUFFile(bytes: writer.bytes())))
        #expect(template.defaultSystem == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        #expect(
            template.render([ChatMessage(role: "user", content: "Hi")])
                == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(
            template.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi")])
                == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test func unknownOrMissingTemplatesGiveNil() throws {
        var writer = GGUFWriter()
        #expect(ChatTemplate(try GGUFFile(bytes: writer.bytes())) == nil)
        writer.set("tokenizer.chat_template", .string("[INST] {{ message }} [/INST]"))
        #expect(ChatTemplate(try GGUFFile(bytes: writer.bytes())) == nil)
    }
}

@Suite struct TextGeneratorTests {
    /// A vocabulary of 80 one-character tokens ("!"…"p"); "p" (79) ends a reply.
    static func tokenizer() throws -> Tokenizer {
        let tokens = (33..<113).map { String(UnicodeScalar(UInt8($0))) }
        return try Tokenizer(
            tokens: tokens, types: [Int32](repeating: 1, count: 80), merges: [], preTokenizer: PreTokenizer(ggmlName: "gpt2")!,
            eos: 79)
    }

    @Test func streamedTextIsTheDecodedTokensAndGreedyIsRepeatable() throws {
        let tiny = try TinyLlama.make(weightType: .q8_0)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 2)
        let generator = TextGenerator(model: model, tokenizer: try Self.tokenizer(), contextLength: 64)
        #expect(generator.stopTokens == [79])
        var streamed = ""
        let summary = try generator.generate(prompt: [3, 17, 42], maxTokens: 20, sampling: .greedy) {
            streamed += $0
            return true
        }
        #expect(summary.generated.count <= 20)
        #expect(streamed == generator.tokenizer.decode(summary.generated))
        #expect(summary.reason == (summary.generated.count == 20 ? "max tokens" : "stop token"))
        let again = try generator.generate(prompt: [3, 17, 42], maxTokens: 20, sampling: .greedy)
        #expect(again.generated == summary.generated)
        #expect(generator.model.position == 3 + max(summary.generated.count - 1, 0))
    }

    @Test func theCallbackCanStopGeneration() throws {
        let tiny = try TinyLlama.make(weightType: .q4_1)
        let model = try LlamaModel(try GGUFFile(bytes: tiny.bytes), threads: 1)
        let generator = TextGenerator(model: model, tokenizer: try Self.tokenizer(), contextLength: 64)
        var sampling = SamplingParameters()
        sampling.seed = 3
        var pieces = 0
        let summary = try generator.generate(prompt: [1], maxTokens: 30, sampling: sampling) { _ in
            pieces += 1
            return pieces < 4
        }
        #expect(pieces <= 4 && summary.generated.count <= 4)
    }

    @Test func utf8IsNeverCutInsideACharacter() {
        let text = Array("aé€🦙".utf8)  // 1 + 2 + 3 + 4 bytes
        #expect(TextGenerator.completeUTF8Prefix(text) == text.count)
        #expect(TextGenerator.completeUTF8Prefix(Array(text.prefix(2))) == 1)
        #expect(TextGenerator.completeUTF8Prefix(Array(text.prefix(5))) == 3)
        #expect(TextGenerator.completeUTF8Prefix(Array(text.prefix(9))) == 6)
        #expect(TextGenerator.completeUTF8Prefix([0xFF, 0x41]) == 2, "invalid bytes are passed on, not held forever")
    }
}
