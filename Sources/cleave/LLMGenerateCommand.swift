import ArgumentParser
import CleaveLLM
import Foundation

struct LLMGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text with a GGUF model, streaming tokens as they come.",
        discussion: """
            Tokenizes --prompt (special-token texts such as <|im_start|> become their ids), runs it \
            through the model in batched passes, then samples one token at a time and prints the \
            text as it is produced. Generation stops at the model's end-of-sequence or end-of-turn \
            token, or after --max-tokens. Statistics go to standard error.

            --chat wraps the prompt as a user turn in the model's chat template (ChatML for SmolLM2 \
            and Qwen; the template's default system message is used unless --system is given).

            Sampling: temperature 0 is greedy; otherwise repetition penalty, top-k, top-p, min-p \
            and temperature are applied in that order (llama.cpp's order and defaults) and the token \
            is drawn with --seed (a random seed is chosen and printed when none is given).

            --prompts FILE runs one prompt per line (the two characters \\n stand for a newline) and \
            prints one JSON line per prompt with the prompt's and the generated token ids, for \
            comparing with other engines; --logits-dir DIR also writes each prompt's first-token \
            logits as raw float32 to DIR/logits-N.f32.

            --workers HOST:PORT,… runs the model tensor-parallel over shard workers (`cleave llm \
            worker` on each board): same flags, same output, plus a line on standard error with \
            the bytes each token sent and the time spent in syncs. A worker that fails mid-answer \
            has its slice taken over by this process; the answer does not change.
            """)

    @Option(help: "The .gguf model file.") var model: String
    @Option(help: "The prompt text.") var prompt: String?
    @Option(help: "A file of prompts, one per line (JSON output).") var prompts: String?
    @Flag(help: "Format the prompt with the model's chat template.") var chat = false
    @Option(help: "System message for --chat.") var system: String?
    @Option(help: "Most tokens to generate.") var maxTokens = 128
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0.8
    @Option(help: "Keep the k most likely tokens (0: all).") var topK = 40
    @Option(help: "Nucleus sampling threshold (1: off).") var topP: Float = 0.95
    @Option(help: "Minimum probability relative to the most likely token (0: off).") var minP: Float = 0.05
    @Option(help: "Repetition penalty (1: off).") var repeatPenalty: Float = 1
    @Option(help: "Tokens the repetition penalty looks back over.") var repeatLastN = 64
    @Option(help: "Seed of the sampler.") var seed: UInt64?
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Context positions to reserve.") var context = 2048
    @Option(help: "With --prompts: write first-token logits here.") var logitsDir: String?
    @Option(help: "Inputs of matrix products: q8 (fast, llama.cpp's arithmetic) or float (exact products).")
    var activations = "q8"
    @OptionGroup(title: "Tensor parallelism") var parallel: ParallelOptions

    func run() throws {
        let file = try GGUFFile(contentsOf: model)
        let tokenizer = try Tokenizer(file)
        let generator: TextGenerator
        var parallelModel: TensorParallelLlama?
        if parallel.isParallel {
            let tp = try parallel.model(file, threads: threads, context: context, precision: try precision(activations))
            generator = TextGenerator(model: tp, tokenizer: tokenizer)
            parallelModel = tp
        } else {
            let llm = try LlamaModel(file, threads: threads, precision: try precision(activations))
            generator = TextGenerator(model: llm, tokenizer: tokenizer, contextLength: context)
        }
        defer {
            if let tp = parallelModel {
                let s = tp.statistics
                let tokens = max(1, tp.position)
                standardError(
                    "tensor parallel: \(s.syncs) syncs, \(s.bytesSent + s.bytesReceived) bytes (\((s.bytesSent + s.bytesReceived) / tokens) per position), "
                        + "sync \(s.syncSeconds.fixed(2)) s, local \(s.localSeconds.fixed(2)) s, \(s.recoveries.count) worker(s) lost"
                        + s.stallSeconds.map { ", stall \($0.fixed(2)) s" }.joined())
            }
        }
        var sampling = SamplingParameters()
        sampling.temperature = temperature
        sampling.topK = topK
        sampling.topP = topP
        sampling.minP = minP
        sampling.repetitionPenalty = repeatPenalty
        sampling.repetitionWindow = repeatLastN
        sampling.seed = seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        try sampling.validate()

        if let prompts {
            try runBatch(prompts, generator: generator, tokenizer: tokenizer, sampling: sampling)
            return
        }
        guard var text = prompt else { throw ValidationError("give --prompt TEXT or --prompts FILE") }
        if chat {
            guard let template = ChatTemplate(file) else {
                throw ValidationError("\(model) has no chat template Cleave knows (ChatML); run without --chat")
            }
            var messages = [ChatMessage(role: "user", content: text)]
            if let system { messages.insert(ChatMessage(role: "system", content: system), at: 0) }
            text = template.render(messages)
        }
        let ids = tokenizer.encode(text)
        let summary = try generator.generate(prompt: ids, maxTokens: maxTokens, sampling: sampling) { piece in
            print(piece, terminator: "")
            fflush(nil)
            return true
        }
        print("")
        let stats = String(
            format: "prompt %d tokens in %.2f s (%.1f tok/s); generated %d tokens in %.2f s (%.1f tok/s); stopped: %@; seed %llu\n",
            summary.promptTokens, summary.promptSeconds, Double(summary.promptTokens) / max(summary.promptSeconds, 1e-9),
            summary.generated.count, summary.decodeSeconds,
            Double(max(summary.generated.count - 1, 0)) / max(summary.decodeSeconds, 1e-9), summary.reason, sampling.seed)
        FileHandle.standardError.write(Data(stats.utf8))
    }

    private func runBatch(_ path: String, generator: TextGenerator, tokenizer: Tokenizer, sampling: SamplingParameters) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() where !line.isEmpty {
            let text = line.replacingOccurrences(of: "\\n", with: "\n")
            let ids = tokenizer.encode(text)
            let summary = try generator.generate(prompt: ids, maxTokens: maxTokens, sampling: sampling)
            if let logitsDir {
                let bytes = summary.firstLogits.withUnsafeBufferPointer { Data(buffer: $0) }
                try bytes.write(to: URL(fileURLWithPath: logitsDir).appendingPathComponent("logits-\(index).f32"))
            }
            let prompt = ids.map(String.init).joined(separator: ",")
            let generated = summary.generated.map(String.init).joined(separator: ",")
            print("{\"prompt\":[\(prompt)],\"generated\":[\(generated)]}")
            fflush(nil)
        }
    }
}
