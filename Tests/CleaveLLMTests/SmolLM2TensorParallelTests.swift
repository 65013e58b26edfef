import CleaveSupport
import Testing

@testable import CleaveLLM

/// SmolLM2-135M over 2 and 3 loopback workers against single-node Cleave (skipped without
/// `CLEAVE_SMOLLM2`, like the other SmolLM2 tests), with exact products (`float` activations):
/// with q8 activations a change in summation order moves a value across a quantization step
/// now and then, and SmolLM2's greedy continuations are that sensitive (see docs/results.md).
@Suite(.serialized) struct SmolLM2TensorParallelTests {
    static let modelPath = SmolLM2TokenizerTests.modelPath
    static let questions = [
        "What is the capital of France?", "Explain what a Raspberry Pi is in two sentences.", "Write a haiku about the sea.",
        "List three uses of copper.", "How do vaccines work?", "Translate 'good morning' into Spanish.",
        "What is 12 times 7?", "Give me a tip for learning to code.", "Why is the sky blue?", "Describe a cat to someone who has never seen one.",
    ]

    /// Single-node continuations of every question, computed once for both worker counts.
    nonisolated(unsafe) static var singleNode: [String: [Int32]] = [:]

    static func prompt(_ tokenizer: Tokenizer, _ question: String) -> [Int32] {
        tokenizer.encode("<|im_start|>user\n\(question)<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test(
        .enabled(if: modelPath != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"), arguments: [2, 3],
        [ActivationPrecision.float])
    func greedyContinuationsOverWorkersEqualSingleNode(workerCount: Int, precision: ActivationPrecision) throws {
        let file = try GGUFFile(contentsOf: try #require(Self.modelPath))
        let tokenizer = try Tokenizer(file)
        let c = try LlamaConfiguration(file)
        let single = LlamaSession(model: try LlamaModel(file, threads: 1, precision: precision), contextLength: 160)
        let workers = try LoopbackWorkers(workerCount)
        let plan = try ShardPlan(
            configuration: c, costs: try ShardCosts(file, configuration: c), nodes: (0..<workerCount).map { ShardNode(name: "w\($0)") },
            contextLength: 160)
        let model = try TensorParallelLlama(file, plan: plan, placements: workers.placements, encoding: .f32, threads: 1, precision: precision)
        var report: [String] = []
        for question in Self.questions {
            let prompt = Self.prompt(tokenizer, question)
            let expected = try Self.singleNode[question] ?? TensorParallelTests.greedy(single, prompt: prompt, tokens: 64)
            Self.singleNode[question] = expected
            let got = try TensorParallelTests.greedy(model, prompt: prompt, tokens: 64)
            if got != expected { report.append("'\(question)': first divergence at \(zip(got, expected).prefix { $0 == $1 }.count)") }
        }
        #expect(report.isEmpty, "\(report)")
    }
}
