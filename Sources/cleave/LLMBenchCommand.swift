import ArgumentParser
import CleaveLLM
import CleaveSupport
import Foundation

struct LLMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prompt processing and decoding speed; print one JSON line.",
        discussion: """
            Measures what llama.cpp's llama-bench measures, so the two can be compared on the same \
            file: prompt processing is one batched evaluation of --prompt-tokens random tokens \
            (seeded) from an empty context; decoding is --decode-tokens single-token evaluations \
            from an empty context. Each is repeated --repetitions times after one warm-up and the \
            median is reported. peak_rss_bytes is the process's maximum resident set size \
            (the mapped weights that were touched count in it).

            Output: {"model", "threads", "prompt_tokens", "decode_tokens", "prompt_tok_s", \
            "decode_tok_s", "peak_rss_bytes", "file_bytes", "repetitions"}.

            With --workers the model runs tensor-parallel over those shard workers (see `cleave llm \
            worker`), and the line also has "workers", "sync", "bytes_per_token" (measured on the \
            sockets over the decoding runs, headers included), "plan_bytes_per_token" (the plan's \
            formula: 2 syncs × blocks × workers × (24 header bytes + 2 × embedding values)), \
            "sync_ms_per_token" (encoding, sending and waiting for the workers' partials) and \
            "local_ms_per_token" (the coordinator's own slices), and "recoveries".
            """)

    @Option(help: "The .gguf model file.") var model: String = ""
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Tokens in the prompt-processing test.") var promptTokens = 128
    @Option(help: "Tokens in the decoding test.") var decodeTokens = 64
    @Option(help: "Measured repetitions of each test.") var repetitions = 5
    @Option(help: "Inputs of matrix products: q8 (fast, llama.cpp's arithmetic) or float (exact products).")
    var activations = "q8"
    @Flag(help: "Time the matrix kernels of every weight type on an in-cache matrix instead (no model needed).")
    var kernels = false
    @OptionGroup(title: "Tensor parallelism") var parallel: ParallelOptions

    func run() throws {
        if kernels {
            for tokens in [1, 4] {
                for result in try KernelBenchmark.run(tokens: tokens, threads: threads ?? 1) {
                    print(
                        String(
                            format: "{\"kernel\": \"%@\", \"rows\": %d, \"columns\": %d, \"tokens\": %d, \"weight_gb_s\": %.2f, \"gmac_s\": %.2f}",
                            result.type.description, result.rows, result.columns, result.tokens, result.bytesPerSecond / 1e9,
                            result.multiplyAddsPerSecond / 1e9))
                }
            }
            return
        }
        guard !model.isEmpty else { throw ValidationError("give --model FILE.gguf (or --kernels)") }
        guard promptTokens > 0, decodeTokens > 0, repetitions > 0 else {
            throw ValidationError("--prompt-tokens, --decode-tokens and --repetitions must be positive")
        }
        let file = try GGUFFile(contentsOf: model)
        let context = max(promptTokens, decodeTokens) + 1
        let llm: any TokenPredictor
        let threadCount: Int
        var parallelModel: TensorParallelLlama?
        if parallel.isParallel {
            let tp = try parallel.model(
                file, threads: threads, context: context, batchSize: max(promptTokens, 1), precision: try precision(activations))
            (llm, threadCount, parallelModel) = (tp, tp.workers.threads, tp)
        } else {
            let single = try LlamaModel(file, threads: threads, batchSize: max(promptTokens, 1), precision: try precision(activations))
            (llm, threadCount) = (LlamaSession(model: single, contextLength: context), single.workers.threads)
        }
        var state: UInt64 = 42
        let prompt = (0..<promptTokens).map { _ -> Int32 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int32((state >> 33) % UInt64(llm.configuration.vocabulary))
        }
        let clock = ContinuousClock()
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = clock.now
            try body()
            return (clock.now - start).seconds
        }
        func promptPass() throws {
            llm.reset()
            _ = try llm.evaluate(prompt)
        }
        var decode = (bytes: 0, sync: 0.0, local: 0.0)
        func decodePass() throws {
            llm.reset()
            let before = parallelModel?.statistics
            var token = prompt[0]
            for _ in 0..<decodeTokens {
                token = Sampler.argmax(try llm.evaluate([token]))
            }
            if let before, let after = parallelModel?.statistics {
                decode.bytes += after.bytesSent + after.bytesReceived - before.bytesSent - before.bytesReceived
                decode.sync += after.syncSeconds - before.syncSeconds
                decode.local += after.localSeconds - before.localSeconds
            }
        }
        try promptPass()
        try decodePass()
        decode = (0, 0, 0)
        var promptRates: [Double] = []
        var decodeRates: [Double] = []
        for _ in 0..<repetitions {
            promptRates.append(Double(promptTokens) / (try seconds(promptPass)))
            decodeRates.append(Double(decodeTokens) / (try seconds(decodePass)))
        }
        func median(_ values: [Double]) -> Double { SampleStatistics(values).median }
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        var fields: [(String, String)] = [
            ("model", "\"\((model as NSString).lastPathComponent)\""),
            ("threads", "\(threadCount)"),
            ("prompt_tokens", "\(promptTokens)"),
            ("decode_tokens", "\(decodeTokens)"),
            ("prompt_tok_s", String(format: "%.2f", median(promptRates))),
            ("decode_tok_s", String(format: "%.2f", median(decodeRates))),
            ("peak_rss_bytes", "\(Int(usage.ru_maxrss) * 1024)"),
            ("file_bytes", "\(file.fileSize)"),
            ("repetitions", "\(repetitions)"),
        ]
        if let tp = parallelModel {
            let decoded = Double(decodeTokens * repetitions)
            let remote = tp.placements.indices.filter { tp.placements[$0] != .coordinator }
            fields += [
                ("workers", "\(remote.count)"),
                ("sync", "\"\(tp.encoding.rawValue)\""),
                ("bytes_per_token", (Double(decode.bytes) / decoded).fixed(1)),
                ("plan_bytes_per_token", "\(tp.plan.syncBytesPerToken(remote: remote, encoding: tp.encoding))"),
                ("sync_ms_per_token", (decode.sync * 1000 / decoded).fixed(3)),
                ("local_ms_per_token", (decode.local * 1000 / decoded).fixed(3)),
                ("recoveries", "\(tp.statistics.recoveries.count)"),
            ]
        }
        print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
    }
}

/// The `--activations` value as an ``ActivationPrecision``.
func precision(_ name: String) throws -> ActivationPrecision {
    guard let precision = ActivationPrecision(rawValue: name) else {
        throw ValidationError("--activations must be one of \(ActivationPrecision.allCases.map(\.rawValue).joined(separator: ", ")), not '\(name)'")
    }
    return precision
}
