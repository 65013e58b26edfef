import Testing

@testable import CleaveLLM

/// SmolLM2-135M-Instruct (Q4_1) end to end. `scripts/test.sh` fetches the model and passes
/// its path in `CLEAVE_SMOLLM2`; without it these tests are skipped.
@Suite struct SmolLM2GenerationTests {
    static let prompt = "<|im_start|>user\nExplain what a Raspberry Pi is in two sentences.<|im_end|>\n<|im_start|>assistant\n"

    /// llama.cpp's ids for `prompt` and its greedy reply (61 tokens, then <|im_end|>), recorded with
    /// `bench/llama_reference` (llama.cpp from the llama-cpp-python 0.3.36 source package, flash
    /// attention on, 2 threads, AVX2).
    static let llamaCppPrompt: [Int32] = [1, 4093, 198, 36971, 732, 253, 32236, 14686, 314, 281, 827, 8545, 30, 2, 198, 1, 520, 9531, 198]
    static let llamaCppReply: [Int32] = [
        504, 32236, 14686, 314, 253, 904, 29, 22373, 7867, 3476, 2724, 327, 3097, 7867, 28, 4170, 327, 3097, 7867, 284, 940,
        2092, 30, 657, 506, 253, 12633, 28, 904, 29, 22373, 7867, 3941, 338, 3362, 4378, 3004, 284, 7596, 28, 1285, 4378,
        12878, 4604, 4784, 28, 904, 29, 22373, 7867, 4784, 28, 284, 253, 3599, 1845, 282, 550, 7787, 3439, 30,
    ]

    /// The five largest first-token logits of an exact float64 forward pass over the dequantized
    /// weights (`bench/check_llm.py`'s reference), float16 keys and values.
    static let exactTopFive: [(Int32, Float)] = [(504, 34.8983), (49, 34.4782), (66, 31.2815), (81, 30.3173), (1195, 29.9665)]

    static let modelPath = SmolLM2TokenizerTests.modelPath

    @Test(.enabled(if: modelPath != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"))
    func greedyReplyEqualsLlamaCpp() throws {
        let file = try GGUFFile(contentsOf: try #require(Self.modelPath))
        let generator = TextGenerator(model: try LlamaModel(file, threads: 2), tokenizer: try Tokenizer(file), contextLength: 256)
        let ids = generator.tokenizer.encode(Self.prompt)
        #expect(ids == Self.llamaCppPrompt)
        var text = ""
        let summary = try generator.generate(prompt: ids, maxTokens: 64, sampling: .greedy) {
            text += $0
            return true
        }
        #expect(summary.generated == Self.llamaCppReply)
        #expect(summary.reason == "stop token")
        #expect(text.hasPrefix("The Raspberry Pi is a high-performance computing device"), "reply: \(text)")
    }

    @Test(.enabled(if: modelPath != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"))
    func firstTokenLogitsMatchTheExactModel() throws {
        let file = try GGUFFile(contentsOf: try #require(Self.modelPath))
        let model = try LlamaModel(file, threads: 2, precision: .float)
        let logits = try model.evaluate(Self.llamaCppPrompt, cache: model.makeCache(capacity: 32))
        let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(5)
        #expect(top.map { Int32($0) } == Self.exactTopFive.map(\.0))
        for (id, exact) in Self.exactTopFive {
            #expect(abs(logits[Int(id)] - exact) < 1e-2, "token \(id): \(logits[Int(id)]) vs float64 \(exact)")
        }
    }
}
