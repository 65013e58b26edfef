import ArgumentParser
import CleaveAgent
import CleaveDatasets
import CleaveProtocol
import FoundationEssentials
import Logging
import ServiceLifecycle

/// `--broker HOST:PORT`.
public struct BrokerAddress: ExpressibleByArgument, Sendable {
    public let host: String
    public let port: Int

    public init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
        host = String(parts[0])
        self.port = port
    }

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// `--username` and `--password-file` for brokers with password authentication.
public struct CredentialOptions: ParsableArguments {
    @Option(help: "Broker username (for agents: the device id, as the ACL in deploy/ expects).") public var username: String?
    @Option(help: "File whose first line is the broker password (kept off the command line).") public var passwordFile: String?

    public init() {}

    /// The password file's first line, nil without a file.
    public func password() throws -> String? {
        guard let passwordFile else { return nil }
        guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
            throw ValidationError("cannot read --password-file \(passwordFile)")
        }
        return String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
    }
}

/// The options of a device agent, the same for `cleave agent` and the lean `cleave-agent`.
public struct AgentOptions: ParsableArguments {
    @Option(help: "Broker as HOST:PORT.") public var broker = BrokerAddress(host: "127.0.0.1", port: 1883)
    @Option(help: "Device profile YAML.") public var profile = "devices/generic.yaml"
    @Option(help: "Device id (default: the profile name and the process id).") public var id: String?
    @Option(help: "How to serve requests: adaptive, local, split or offload.") public var mode = "adaptive"
    @Option(help: "Seconds a remote request waits for its answer before it is computed locally.") public var timeout: Double = 10
    @Option(help: "Requests that wait while the broker is unreachable.") public var offlineQueue = 64
    @Flag(help: "Fail a remote request without an answer instead of computing it locally.") public var noFallback = false
    @Option(help: "How many inputs to send (0: stay online until SIGTERM/SIGINT without sending).") public var samples = 0
    @Option(help: "Requests per second (0: as fast as answers come).") public var rate: Double = 0
    @Option(help: "Fashion-MNIST folder.") public var dataset = FashionMNIST.defaultDirectory
    @Option(
        help: "Inputs: fmnist (test set, accuracy reported), synthetic (seeded random images) or a folder of PNG/PGM files (predictions printed).")
    public var source = "fmnist"
    @Option(
        help:
            "Send split requests in parts as the head computes them, one frame per 'patch' or per 'row' of patches, with a patch plan that ends at the cut."
    )
    public var streamPatches: String?
    @Option(help: "Folder for verified model artifacts, kept across restarts (\"none\": memory only).")
    public var modelCache = AgentConfiguration.defaultModelCache
    @OptionGroup public var credentials: CredentialOptions

    public init() {}

    public func validate() throws {
        guard mode == "adaptive" || InferenceMode(rawValue: mode) != nil else {
            throw ValidationError("--mode must be adaptive, local, split or offload, not '\(mode)'")
        }
        if let streamPatches, PatchStreaming(rawValue: streamPatches) == nil {
            throw ValidationError("--stream-patches must be patch or row, not '\(streamPatches)'")
        }
        guard timeout > 0, offlineQueue > 0, samples >= 0, rate >= 0 else {
            throw ValidationError("--timeout and --offline-queue must be positive, --samples and --rate not negative")
        }
    }

    /// The agent's configuration from these options.
    public func configuration() throws -> AgentConfiguration {
        let deviceProfile = try DeviceProfile.load(profile)
        return AgentConfiguration(
            deviceID: id ?? "\(deviceProfile.name)-\(ProcessInfo.processInfo.processIdentifier)", profile: deviceProfile,
            brokerHost: broker.host, brokerPort: broker.port, requestTimeout: .milliseconds(Int(timeout * 1000)),
            username: credentials.username, password: try credentials.password(), modelCache: AgentConfiguration.modelCache(option: modelCache),
            fallbackToLocal: !noFallback, offlineQueueLimit: offlineQueue, streamPatches: streamPatches.flatMap(PatchStreaming.init(rawValue:)))
    }

    /// Runs the agent until its samples are sent, or until SIGTERM/SIGINT: then it sends no new
    /// request, finishes those in flight, announces itself offline and returns (exit status 0).
    public func run() async throws {
        let agent = try Agent(try configuration())
        let input = samples > 0 ? try InputSource.named(source, datasetDirectory: dataset) : nil
        var logger = Logger(label: "cleave.agent")
        logger.logLevel = .notice
        let service = AgentService(agent: agent, source: input, samples: samples, mode: InferenceMode(rawValue: mode), rate: rate)
        let group = ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}
