import ArgumentParser
import CleaveLLM
import CleaveSupport
import Foundation

struct LLMPerplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Measure perplexity over a text file as llama.cpp's llama-perplexity does.",
        discussion: """
            Tokenizes --file, cuts it into chunks of --context tokens (the rest is dropped), puts BOS \
            first in each chunk when the model adds one, evaluates each chunk from an empty context and \
            scores the second half of it: the same windows llama-perplexity uses, so that the numbers \
            compare. Prints a progress line per chunk and `perplexity: P over N tokens in C chunks`.

            --kl-base FILE reads the logits file of `llama-perplexity --kl-divergence-base FILE` instead \
            of tokenizing (its chunks are used, so the windows are identical) and also prints llama.cpp's \
            perplexity over them, the mean KL divergence of our next-token distributions from \
            llama.cpp's, and how often the two agree on the most likely token. With --workers the model \
            runs tensor-parallel.
            """)

    @Option(help: "The .gguf model file.") var model: String
    @Option(help: "The text to score.") var file: String?
    @Option(help: "Tokens per chunk (llama-perplexity's -c).") var context = 512
    @Option(help: "A llama-perplexity --kl-divergence-base file to compare with.") var klBase: String?
    @Option(help: "Score only the first N chunks.") var chunks: Int?
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Inputs of matrix products: q8 (fast) or float (exact products).") var activations = "q8"
    @OptionGroup(title: "Tensor parallelism") var parallel: ParallelOptions

    func run() throws {
        let gguf = try GGUFFile(contentsOf: model)
        let tokenizer = try Tokenizer(gguf)
        let bos = tokenizer.addsBOS ? tokenizer.bos : nil
        let reference = try klBase.map { try LlamaCppLogits(contentsOf: $0) }
        var windows: [[Int32]]
        if let reference {
            windows = reference.chunks(bos: bos)
        } else {
            guard let file else { throw ValidationError("give --file TEXT (or --kl-base FILE)") }
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            windows = Perplexity.chunks(tokenizer.encode(String(decoding: data, as: UTF8.self)), context: context, bos: bos)
        }
        if let chunks { windows = Array(windows.prefix(chunks)) }
        guard let width = windows.first?.count else { throw ValidationError("the text has fewer than \(context) tokens") }
        let predictor: any TokenPredictor
        if parallel.isParallel {
            predictor = try parallel.model(gguf, threads: threads, context: width, batchSize: 64, precision: try precision(activations))
        } else {
            predictor = LlamaSession(model: try LlamaModel(gguf, threads: threads, precision: try precision(activations)), contextLength: width)
        }
        let clock = ContinuousClock()
        let started = clock.now
        let result = try Perplexity.measure(predictor, chunks: windows, reference: reference) { done, running in
            standardError("[\(done)/\(windows.count)] running perplexity \(running.fixed(4)) (\((clock.now - started).seconds.fixed(1)) s)")
        }
        print("perplexity: \(result.perplexity.fixed(4)) over \(result.scoredTokens) tokens in \(result.chunks) chunks of \(width)")
        if let reference = result.referencePerplexity, let kl = result.meanKL, let same = result.sameTop {
            print("llama.cpp perplexity over the same tokens: \(reference.fixed(4)) (ratio \((result.perplexity / reference).fixed(4)))")
            print("mean KL divergence from llama.cpp: \(kl.fixed(6)) nats; same top token: \((100 * same).fixed(2))%")
        }
    }
}
