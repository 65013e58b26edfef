import ArgumentParser
import CleaveAgent
import CleaveAgentCLI
import CleaveCoordinator
import CleaveDatasets
import CleaveProtocol
import CleaveSupport
import CleaveTestbed
import Foundation
import Logging

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
        let testbed = try Testbed(broker: broker.map { ($0.host, $0.port) })
        if let started = await testbed.localBroker {
            printNow("started mosquitto on 127.0.0.1:\(started.port) (config in \(started.directory))")
        }
        let samples = min(self.samples, test.count)
        var logger = Logger(label: "cleave.demo")
        logger.logLevel = .notice
        do {
            try await testbed.run(logger: logger) { testbed in
                let coordinator = try await testbed.addCoordinator(CoordinatorConfiguration(id: "demo-coordinator"), bundle: bundle)
                for (index, profile) in profiles.enumerated() {
                    try await testbed.addAgent(AgentConfiguration(deviceID: "demo-\(index + 1)-\(profile.name)", profile: profile, threads: 1))
                }
                try await testbed.waitUntilReady()
                printNow("coordinator and \(profiles.count) agents ready: \(await coordinator.onlineDevices.joined(separator: ", "))")
                print(
                    "model \(bundle.manifest.name): cut at \(bundle.manifest.cutTensor) \(bundle.manifest.cutShape), codec \(bundle.manifest.codec)")

                var rows: [RunSummary] = []
                for mode in [InferenceMode.split, .local, .offload] {
                    let started = ContinuousClock.now
                    let bar = ProgressBarBox(ProgressBar(mode.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0), total: samples))
                    let outcomes = await testbed.stream(count: samples, mode: mode, input: { test.image($0) }, progress: { await bar.update($0) })
                    let summary = RunSummary(
                        mode: mode, outcomes: outcomes, labels: Array(test.labels.prefix(outcomes.count)),
                        seconds: (ContinuousClock.now - started).seconds)
                    try Task.checkCancellation()
                    await bar.finish(String(format: "accuracy %.2f%%, %d failed", summary.accuracy * 100, summary.failures))
                    rows.append(summary)
                }
                print("")
                print(RunSummary.header)
                for row in rows { print(row.line) }
                let stats = await coordinator.statistics
                print("coordinator answered \(stats.answered), rejected \(stats.rejected), duplicates \(stats.duplicates)")
            }
        } catch TestbedError.interrupted {
            FileHandle.standardError.write(Data("demo: \(TestbedError.interrupted)\n".utf8))
            throw ExitCode(130)
        }
    }
}

actor ProgressBarBox {
    private var bar: ProgressBar
    init(_ bar: ProgressBar) { self.bar = bar }
    func update(_ done: Int) { bar.update(done) }
    func finish(_ summary: String) { bar.finish(summary) }
}
