import ArgumentParser
import CleaveAgent
import CleaveCoordinator
import CleaveDatasets
import CleaveMQTT
import CleaveProtocol
import CleaveTensor
import CleaveTrain
import Dispatch
import Foundation

/// `--broker HOST:PORT`.
struct BrokerAddress: ExpressibleByArgument {
    let host: String
    let port: Int

    init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
        host = String(parts[0])
        self.port = port
    }

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

extension InferenceMode: ExpressibleByArgument {}

/// `--username` and `--password-file` for brokers with password authentication.
struct CredentialOptions: ParsableArguments {
    @Option(help: "Broker username (for agents: the device id, as the ACL in deploy/ expects).") var username: String?
    @Option(help: "File whose first line is the broker password (kept off the command line).") var passwordFile: String?

    func password() throws -> String? {
        guard let passwordFile else { return nil }
        guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
            throw ValidationError("cannot read --password-file \(passwordFile)")
        }
        return String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
    }
}

/// Runs `body` when SIGINT or SIGTERM arrives (once), then exits.
func onInterrupt(_ body: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { signalNumber in
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler {
            body()
            exit(128 + signalNumber)
        }
        source.resume()
        return source
    }
}

// MARK: - coordinator

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve split-model tails over MQTT until interrupted.",
        discussion: """
            Publishes the model artifacts (retained, by SHA-256), assigns every device that comes online, \
            and answers feature frames from the shared subscription $share/coordinators/cleave/v1/infer/+ \
            with dynamic batching. Start several to share the load.
            """)

    @Option(help: "Broker as HOST:PORT.") var broker: BrokerAddress = BrokerAddress(host: "127.0.0.1", port: 1883)
    @Option(help: "Model folder with manifest.json.") var model: String = "models/fmnist/c4"
    @Option(help: "Coordinator id (unique per broker).") var id: String = "coordinator-1"
    @Option(help: "Largest batch the tail runs.") var maxBatch: Int = 16
    @Option(help: "Longest a request waits for a batch, in milliseconds.") var maxWaitMs: Int = 2
    @Option(help: "Tail workers: batches that run at the same time, one core each.") var threads: Int = 1
    @OptionGroup var credentials: CredentialOptions

    func run() async throws {
        let coordinator = try Coordinator(
            CoordinatorConfiguration(
                id: id, brokerHost: broker.host, brokerPort: broker.port, maximumBatch: maxBatch, maximumWait: .milliseconds(maxWaitMs),
                threads: threads, username: credentials.username, password: try credentials.password()),
            bundle: try ModelBundle(directory: model))
        try await coordinator.start()
        let signals = onInterrupt {}
        while true {
            try await Task.sleep(for: .seconds(10))
            let stats = await coordinator.statistics
            print(
                "coordinator \(id): \(stats.devicesOnline) devices online, \(stats.answered) answered, \(stats.rejected) rejected, \(stats.duplicates) duplicates"
            )
            _ = signals
        }
    }
}

// MARK: - agent

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a device agent: announce, take the assignment, stream Fashion-MNIST test images.",
        discussion: """
            Prints one summary line per 1,000 requests and a final summary. Modes: adaptive (the default: \
            each request goes where the agent's policy predicts it is fastest, from the device profile, \
            the models' FLOPs and the agent's own measurements of the link; a remote request without an \
            answer by its hedging delay is computed locally), or a fixed local, split or offload. Remote \
            requests made while the broker is unreachable wait in an offline queue (--offline-queue \
            requests; when it is full the oldest is computed locally) and go out when the connection is \
            back; unanswered ones are sent again after 1, 2, 4, 8 s (the coordinator answers repeats \
            from its cache).
            """)

    @Option(help: "Broker as HOST:PORT.") var broker: BrokerAddress = BrokerAddress(host: "127.0.0.1", port: 1883)
    @Option(help: "Device profile YAML.") var profile: String = "devices/generic.yaml"
    @Option(help: "Device id (default: the profile name and the process id).") var id: String?
    @Option(help: "How to serve requests: adaptive, local, split or offload.") var mode: String = "adaptive"
    @Option(help: "Seconds a remote request waits for its answer before it is computed locally.") var timeout: Double = 10
    @Option(help: "Requests that wait while the broker is unreachable.") var offlineQueue: Int = 64
    @Flag(help: "Fail a remote request without an answer instead of computing it locally.") var noFallback = false
    @Option(help: "How many test images to send (0: serve until interrupted without sending).") var samples: Int = 1000
    @Option(help: "Requests per second (0: as fast as answers come).") var rate: Double = 0
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory
    @Option(
        help: "Inputs: fmnist (test set, accuracy reported), synthetic (seeded random images) or a folder of PNG/PGM files (predictions printed).")
    var source: String = "fmnist"
    @Option(help: "Folder for verified model artifacts, kept across restarts (\"none\": memory only).")
    var modelCache: String = AgentConfiguration.defaultModelCache
    @OptionGroup var credentials: CredentialOptions

    func run() async throws {
        let fixedMode = InferenceMode(rawValue: mode)
        guard fixedMode != nil || mode == "adaptive" else { throw ValidationError("--mode must be adaptive, local, split or offload") }
        guard timeout > 0, offlineQueue > 0 else { throw ValidationError("--timeout and --offline-queue must be positive") }
        let deviceProfile = try DeviceProfile.load(profile)
        let agent = try Agent(
            AgentConfiguration(
                deviceID: id ?? "\(deviceProfile.name)-\(ProcessInfo.processInfo.processIdentifier)", profile: deviceProfile,
                brokerHost: broker.host, brokerPort: broker.port, requestTimeout: .milliseconds(Int(timeout * 1000)),
                username: credentials.username, password: try credentials.password(), modelCache: AgentConfiguration.modelCache(option: modelCache),
                fallbackToLocal: !noFallback, offlineQueueLimit: offlineQueue))
        try await agent.start()
        try await agent.waitUntilReady()
        let signals = onInterrupt {}
        guard samples > 0 else {
            while true { try await Task.sleep(for: .seconds(60)) }
        }
        let input = try InputSource.named(source, datasetDirectory: dataset)
        try await agent.serveAndReport(input, samples: samples, mode: fixedMode, rate: rate)
        await agent.stop()
        _ = signals
    }
}
