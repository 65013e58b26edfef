import ArgumentParser
import CleaveAgent
import CleaveCoordinator
import CleaveDatasets
import CleaveProtocol
import CleaveTensor
import CleaveTestbed
import Foundation
import Logging

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print numbers (JSON lines).",
        subcommands: [SplitBench.self])
}

struct SplitBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "Coordinator throughput and end-to-end latency over a local Mosquitto.",
        discussion: """
            Starts mosquitto on a free loopback port, one coordinator and N in-process agents. \
            Throughput: every agent keeps --in-flight split requests outstanding until --requests are \
            answered; run once with batching (up to 32) and once without (batch 1). Latency: the agents \
            together send --rate requests per second, paced, for --latency-requests requests. \
            Prints one JSON line per measurement.

            On a real fleet the heads run on the boards, so by default each agent runs its head once \
            and then sends those features (freshly encoded, with a new request id) for every request: \
            the machine's cores measure the coordinator, the broker and the MQTT path. With \
            --live-heads every request runs the head on this machine too.
            """)

    @Option(help: "Agents.") var agents: Int = 4
    @Option(help: "Requests for each throughput run.") var requests: Int = 20000
    @Option(help: "Outstanding requests per agent in throughput runs.") var inFlight: Int = 16
    @Option(help: "Total paced request rate for the latency run (req/s).") var rate: Double = 100
    @Option(help: "Requests in the latency run.") var latencyRequests: Int = 2000
    @Option(help: "Model folder.") var model: String = "models/fmnist/c4"
    @Option(help: "Device profile for the agents.") var profile: String = "devices/generic.yaml"
    @Option(help: "Coordinator tail workers (batches at once, one core each).") var threads: Int = 2
    @Flag(help: "Run the head for every request on this machine instead of replaying its features.") var liveHeads = false

    func run() async throws {
        let bundle = try ModelBundle(directory: model)
        let deviceProfile = try DeviceProfile.load(profile)
        let image = try FashionMNIST(split: .test).image(0)
        var logger = Logger(label: "cleave.bench")
        logger.logLevel = .notice
        // A fresh broker, coordinator and agents for each configuration.
        for (label, maximumBatch) in [("batching", 32), ("no-batching", 1)] {
            do {
                try await Testbed().run(logger: logger) { testbed in
                    try await measure(label: label, maximumBatch: maximumBatch, on: testbed, bundle: bundle, profile: deviceProfile, image: image)
                }
            } catch TestbedError.interrupted {
                throw ExitCode(130)
            }
        }
    }

    /// The throughput run of one configuration and, with batching, the paced latency run.
    func measure(label: String, maximumBatch: Int, on testbed: Testbed, bundle: ModelBundle, profile: DeviceProfile, image: Tensor) async throws {
        try await testbed.addCoordinator(
            CoordinatorConfiguration(id: "bench-\(label)", maximumBatch: maximumBatch, maximumWait: .milliseconds(1), threads: threads),
            bundle: bundle)
        for index in 0..<agents {
            try await testbed.addAgent(AgentConfiguration(deviceID: "bench-\(label)-\(index)", profile: profile, threads: 1))
        }
        try await testbed.waitUntilReady()
        let fleet = await testbed.agents
        let features = try await fleet[0].headFeatures(image)
        let perAgent = requests / agents
        let started = ContinuousClock.now
        let outcomes = await withTaskGroup(of: [AgentOutcome].self) { group in
            for agent in fleet {
                for lane in 0..<inFlight {
                    group.addTask {
                        var mine: [AgentOutcome] = []
                        for _ in stride(from: lane, to: perAgent, by: inFlight) { mine.append(await send(image, features, to: agent)) }
                        return mine
                    }
                }
            }
            var all: [AgentOutcome] = []
            for await part in group { all += part }
            return all
        }
        let seconds = (ContinuousClock.now - started).seconds
        let summary = RunSummary(mode: .split, outcomes: outcomes, labels: [UInt8](repeating: 0, count: outcomes.count), seconds: seconds)
        printNow(
            String(
                format:
                    "{\"bench\": \"split-throughput\", \"coordinator\": \"%@\", \"workers\": %d, \"heads\": \"%@\", \"agents\": %d, \"in_flight_per_agent\": %d, \"requests\": %d, \"failed\": %d, \"frames_per_s\": %.0f, \"mean_batch\": %.2f, \"p50_ms\": %.2f, \"p99_ms\": %.2f}",
                label, threads, liveHeads ? "live" : "replayed", agents, inFlight, summary.count, summary.failures, summary.throughput,
                summary.meanBatch, summary.p50, summary.p99))
        if label == "batching" {
            let paced = await withTaskGroup(of: [AgentOutcome].self) { group in
                let interval = Double(agents) / rate
                for (slot, agent) in fleet.enumerated() {
                    group.addTask {
                        let begin = ContinuousClock.now + .milliseconds(Int(Double(slot) * 1000 / rate))
                        var mine: [AgentOutcome] = []
                        for index in 0..<(latencyRequests / agents) {
                            try? await Task.sleep(until: begin + .milliseconds(Int(Double(index) * interval * 1000)))
                            mine.append(await send(image, features, to: agent))
                        }
                        return mine
                    }
                }
                var all: [AgentOutcome] = []
                for await part in group { all += part }
                return all
            }
            let latency = RunSummary(mode: .split, outcomes: paced, labels: [UInt8](repeating: 0, count: paced.count), seconds: 1)
            printNow(
                String(
                    format:
                        "{\"bench\": \"split-latency\", \"rate_per_s\": %.0f, \"requests\": %d, \"failed\": %d, \"p50_ms\": %.2f, \"p95_ms\": %.2f, \"p99_ms\": %.2f, \"bytes_per_frame\": %.1f}",
                    rate, latency.count, latency.failures, latency.p50, latency.p95, latency.p99, latency.bytesPerSample))
        }
    }

    /// One split request: the whole agent path with --live-heads, else the recorded features.
    func send(_ image: Tensor, _ features: Tensor, to agent: Agent) async -> AgentOutcome {
        liveHeads ? await agent.infer(image, mode: .split) : await agent.inferSplit(features: features)
    }
}
