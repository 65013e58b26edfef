import ArgumentParser
import CleaveAgent
import CleaveAgentCLI
import CleaveCoordinator
import CleaveDatasets
import CleaveMQTT
import CleaveProtocol
import CleaveTensor
import CleaveTrain
import Foundation

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Split inference end to end: broker, coordinator and three agents on this machine.",
        discussion: """
            Without --broker, starts mosquitto from PATH on a free loopback port with a generated configuration. \
            Starts a coordinator and three agents with different device profiles, streams Fashion-MNIST test \
            images through split inference, then local and offload for comparison, and prints a table: \
            mode, accuracy, bytes per sample, latency p50/p95/p99, throughput. Everything it started is stopped \
            on exit or Ctrl-C.
            """)

    @Option(help: "Use this broker (HOST:PORT) instead of starting one.") var broker: BrokerAddress?
    @Option(help: "Model folder with manifest.json.") var model: String = "models/fmnist/c4"
    @Option(help: "Folder of device profiles.") var devices: String = "devices"
    @Option(help: "Test images per mode.") var samples: Int = 3000
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory

    func run() async throws {
        let bundle = try ModelBundle(directory: model)
        let test = try FashionMNIST(split: .test, directory: dataset)
        let profiles = try ["raspberry-pi-zero-2w", "raspberry-pi-4b-4gb", "raspberry-pi-5-8gb"].map {
            try DeviceProfile.load("\(devices)/\($0).yaml")
        }

        var localBroker: LocalBroker?
        let address: BrokerAddress
        if let broker {
            address = broker
        } else {
            let started = try LocalBroker()
            localBroker = started
            address = BrokerAddress(host: "127.0.0.1", port: started.port)
            print("started mosquitto on 127.0.0.1:\(started.port) (config in \(started.directory.path))")
        }
        let brokerToStop = localBroker
        let signals = onInterrupt { brokerToStop?.stop() }

        let coordinator = try Coordinator(
            CoordinatorConfiguration(id: "demo-coordinator", brokerHost: address.host, brokerPort: address.port), bundle: bundle)
        try await coordinator.start()
        var agents: [Agent] = []
        for (index, profile) in profiles.enumerated() {
            let agent = try Agent(
                AgentConfiguration(
                    deviceID: "demo-\(index + 1)-\(profile.name)", profile: profile, brokerHost: address.host, brokerPort: address.port, threads: 1))
            try await agent.start()
            agents.append(agent)
        }
        for agent in agents { try await agent.waitUntilReady() }
        print("coordinator and \(agents.count) agents ready: \(await coordinator.onlineDevices.joined(separator: ", "))")
        print("model \(bundle.manifest.name): cut at \(bundle.manifest.cutTensor) \(bundle.manifest.cutShape), codec \(bundle.manifest.codec)")

        var rows: [RunSummary] = []
        for mode in [InferenceMode.split, .local, .offload] {
            rows.append(try await stream(mode: mode, agents: agents, test: test))
        }
        print("")
        print(RunSummary.header)
        for row in rows { print(row.line) }
        let stats = await coordinator.statistics
        print("coordinator answered \(stats.answered), rejected \(stats.rejected), duplicates \(stats.duplicates)")
        for agent in agents { await agent.stop() }
        await coordinator.stop()
        localBroker?.stop()
        _ = signals
    }

    /// Sends `samples` test images round-robin over the agents, each agent one request at a time.
    func stream(mode: InferenceMode, agents: [Agent], test: FashionMNIST) async throws -> RunSummary {
        let count = min(samples, test.count)
        let started = ContinuousClock.now
        let progress = ProgressCounter()
        let bar = ProgressBarBox(ProgressBar(mode.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0), total: count))
        let results = await withTaskGroup(of: [(Int, AgentOutcome)].self) { group in
            for (slot, agent) in agents.enumerated() {
                group.addTask {
                    var mine: [(Int, AgentOutcome)] = []
                    for index in stride(from: slot, to: count, by: agents.count) {
                        mine.append((index, await agent.infer(test.image(index), mode: mode)))
                        let done = await progress.increment()
                        await bar.update(done)
                    }
                    return mine
                }
            }
            var all: [(Int, AgentOutcome)] = []
            for await part in group { all += part }
            return all.sorted { $0.0 < $1.0 }
        }
        let summary = RunSummary(
            mode: mode, outcomes: results.map(\.1), labels: results.map { test.labels[$0.0] }, seconds: (ContinuousClock.now - started).seconds)
        await bar.finish(String(format: "accuracy %.2f%%, %d failed", summary.accuracy * 100, summary.failures))
        return summary
    }
}

actor ProgressCounter {
    private var value = 0
    func increment() -> Int {
        value += 1
        return value
    }
}

actor ProgressBarBox {
    private var bar: ProgressBar
    init(_ bar: ProgressBar) { self.bar = bar }
    func update(_ done: Int) { bar.update(done) }
    func finish(_ summary: String) { bar.finish(summary) }
}
