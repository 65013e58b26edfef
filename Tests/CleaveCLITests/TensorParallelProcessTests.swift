import CleaveLLM
import CleaveMQTT
import CleaveSupport
import Foundation
import Testing

/// `cleave llm worker` processes on loopback, driven by a coordinator in this process.
@Suite(.serialized) struct TensorParallelProcessTests {
    static let smolLM2 = ProcessInfo.processInfo.environment["CLEAVE_SMOLLM2"]

    /// Starts a worker process on a free port and waits until it accepts connections.
    static func startWorker(cache: String, extra: [String] = []) throws -> (Process, Endpoint) {
        let probe = try TCPSocket.listen(on: Endpoint(host: "127.0.0.1", port: 0))
        let endpoint = Endpoint(host: "127.0.0.1", port: probe.localPort)
        probe.close()
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = ["llm", "worker", "--listen", endpoint.description, "--cache", cache, "--threads", "1"] + extra
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 {
            if (try? TCPSocket.connect(to: endpoint)) != nil { return (process, endpoint) }
            usleep(20_000)
        }
        process.terminate()
        throw LLMError(.worker, "worker on \(endpoint) did not start")
    }

    static func greedy(_ model: any TokenPredictor, prompt: [Int32], tokens: Int, onToken: (Int) -> Void = { _ in }) throws -> [Int32] {
        model.reset()
        var logits = try model.evaluate(prompt)
        var out: [Int32] = []
        while out.count < tokens {
            out.append(Sampler.argmax(logits))
            onToken(out.count)
            logits = try model.evaluate([out.last!])
        }
        return out
    }

    @Test(.enabled(if: smolLM2 != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"))
    func killingAWorkerAtToken20Of64LeavesTheAnswerUnchanged() throws {
        let file = try GGUFFile(contentsOf: try #require(Self.smolLM2))
        let c = try LlamaConfiguration(file)
        let cache = try SystemCall.makeTemporaryDirectory(prefix: "cleave-tp-workers")
        let started = try (0..<3).map { try Self.startWorker(cache: "\(cache)/\($0)") }
        defer { for (process, _) in started where process.isRunning { process.terminate() } }
        let plan = try ShardPlan(
            configuration: c, costs: try ShardCosts(file, configuration: c), nodes: (0..<3).map { ShardNode(name: "w\($0)") }, contextLength: 128)
        let model = try TensorParallelLlama(
            file, plan: plan, placements: started.map { .worker($0.1) }, encoding: .q8_0, threads: 1, timeout: 10)
        let prompt = try Tokenizer(file).encode("<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n")
        let uninterrupted = try Self.greedy(model, prompt: prompt, tokens: 64)
        #expect(model.statistics.recoveries.isEmpty)
        let victim = started[1].0
        let got = try Self.greedy(model, prompt: prompt, tokens: 64) { count in
            if count == 20 {
                kill(victim.processIdentifier, SIGKILL)
                victim.waitUntilExit()
            }
        }
        #expect(got == uninterrupted)
        #expect(model.statistics.recoveries.count == 1)
        #expect(model.placements[1] == .coordinator)
        let stall = try #require(model.statistics.stallSeconds.first)
        print("tensor parallel: worker killed at token 20 of 64, stall \(stall.fixed(3)) s, answer unchanged")
    }

    @Test(.enabled(if: smolLM2 != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"))
    func workersAnnouncedOnTheBrokerAreFoundAndLeave() throws {
        let broker = try LocalBroker()
        let cache = try SystemCall.makeTemporaryDirectory(prefix: "cleave-tp-discovery")
        let brokerFlag = ["--broker", "127.0.0.1:\(broker.port)"]
        let a = try Self.startWorker(cache: "\(cache)/a", extra: brokerFlag + ["--id", "board-a"])
        let b = try Self.startWorker(cache: "\(cache)/b", extra: brokerFlag + ["--id", "board-b"])
        defer { for (process, _) in [a, b] where process.isRunning { process.terminate() } }
        let generate = [
            "llm", "generate", "--model", try #require(Self.smolLM2), "--prompt", "Hello", "--temperature", "0", "--max-tokens", "4",
            "--discover", "127.0.0.1:\(broker.port)",
        ]
        let both = try CLITests().cleave(generate + ["--minimum-workers", "2"])
        #expect(both.status == 0, "\(both.error)")
        #expect(both.error.contains("discovered 2 worker(s)") && both.error.contains("board-a, board-b"), "\(both.error)")
        // A worker stopped with SIGINT announces itself offline; the next coordinator plans without it.
        kill(a.0.processIdentifier, SIGINT)
        a.0.waitUntilExit()
        let one = try CLITests().cleave(generate)
        #expect(one.status == 0, "\(one.error)")
        #expect(one.error.contains("discovered 1 worker(s)") && one.error.contains(": board-b"), "\(one.error)")
    }
}
