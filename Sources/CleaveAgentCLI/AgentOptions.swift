import ArgumentParser
import CleaveAgent
import CleaveDatasets
import CleaveIdentity
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
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

/// How to log in to the broker: `--username` and `--password-file`, TLS files, or all of
/// them at once from a fleet member folder (`cleave fleet enroll`).
public struct CredentialOptions: ParsableArguments {
    @Option(help: "Broker username (for agents: the device id, as the ACL in deploy/ expects).") public var username: String?
    @Option(help: "File whose first line is the broker password (kept off the command line).") public var passwordFile: String?
    @Option(help: "CA certificate (PEM) to verify a TLS broker with; turns TLS on.") public var tlsCa: String?
    @Option(help: "This client's certificate (PEM), for a broker that requires one.") public var tlsCert: String?
    @Option(help: "The private key (PEM) of --tls-cert.") public var tlsKey: String?
    @Option(
        help: ArgumentHelp(
            "A member folder made by `cleave fleet enroll ID`: username ID, its password, TLS files and the fleet key in one.",
            discussion: "Options given beside it win over the folder's files."))
    public var member: String?

    public init() {}

    /// What the options say, with a member folder's files filling what is not given.
    public struct Resolved: Sendable {
        public var username: String?
        public var password: String?
        public var tls: MQTTConfiguration.TLS?
        /// The member folder's `fleet.pub` (pinned by agents).
        public var fleetKeyFile: String?
        /// The member folder's `signing.key` (coordinators only).
        public var signingKeyFile: String?
    }

    public func resolved() throws -> Resolved {
        var result = Resolved()
        var passwordFile = self.passwordFile
        var files = (ca: tlsCa, certificate: tlsCert, key: tlsKey)
        if let member {
            let id = String(member.split(separator: "/").last ?? "")
            guard SystemCall.isReadable("\(member)/password") else {
                throw ValidationError(
                    "--member \(member) is not a member folder (no readable password file): make one with `cleave fleet enroll \(id)`")
            }
            result.username = id
            passwordFile = passwordFile ?? "\(member)/password"
            files.ca = files.ca ?? "\(member)/ca.crt"
            files.certificate = files.certificate ?? "\(member)/\(id).crt"
            files.key = files.key ?? "\(member)/\(id).key"
            if SystemCall.isReadable("\(member)/fleet.pub") { result.fleetKeyFile = "\(member)/fleet.pub" }
            if SystemCall.isReadable("\(member)/signing.key") { result.signingKeyFile = "\(member)/signing.key" }
        }
        result.username = username ?? result.username
        if let passwordFile {
            guard let bytes = try? SystemCall.readFile(passwordFile) else { throw ValidationError("cannot read --password-file \(passwordFile)") }
            result.password = String(String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
        }
        guard (files.certificate == nil) == (files.key == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if files.certificate != nil && files.ca == nil {
            throw ValidationError("--tls-cert needs --tls-ca (the CA that signed the broker's certificate)")
        }
        for path in [files.ca, files.certificate, files.key].compactMap({ $0 }) where !SystemCall.isReadable(path) {
            throw ValidationError("cannot read TLS file \(path)")
        }
        if let ca = files.ca { result.tls = MQTTConfiguration.TLS(caFile: ca, certificateFile: files.certificate, keyFile: files.key) }
        return result
    }
}

/// Reads a fleet key file of 64 hex digits — `fleet.pub` (`FleetPublicKey.init(hex:)`) or the
/// coordinators' `signing.key` (`FleetSigningKey.init(hex:)`) — naming the file in any error.
public func readFleetKey<Key>(_ path: String, as parse: (String) throws -> Key) throws -> Key {
    guard let bytes = try? SystemCall.readFile(path) else { throw ValidationError("cannot read key file \(path)") }
    do {
        return try parse(String(decoding: bytes, as: UTF8.self))
    } catch {
        throw ValidationError("\(path): \(error)")
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
    @Option(help: "Requests in flight at once (1: each waits for the answer to the one before).") public var inFlight = 1
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
    @Option(
        help: ArgumentHelp(
            "Keep unanswered remote requests in this folder, so that a crashed agent's requests are sent again after a restart.",
            discussion: "Their answers are appended to FOLDER/answers.jsonl. Costs one fsync per remote request."))
    public var queueDir: String?
    @OptionGroup public var credentials: CredentialOptions
    @Option(
        help: ArgumentHelp(
            "The fleet's public key (fleet.pub): take control messages only signed by it.",
            discussion:
                "A --member folder's fleet.pub is used without this option. Unsigned, altered, misdirected and replayed control messages are refused and logged."
        ))
    public var fleetKey: String?

    public init() {}

    public func validate() throws {
        guard mode == "adaptive" || InferenceMode(rawValue: mode) != nil else {
            throw ValidationError("--mode must be adaptive, local, split or offload, not '\(mode)'")
        }
        if let streamPatches, PatchStreaming(rawValue: streamPatches) == nil {
            throw ValidationError("--stream-patches must be patch or row, not '\(streamPatches)'")
        }
        guard timeout > 0, offlineQueue > 0, samples >= 0, rate >= 0, inFlight >= 1 else {
            throw ValidationError("--timeout, --offline-queue and --in-flight must be positive, --samples and --rate not negative")
        }
    }

    /// The agent's configuration from these options.
    public func configuration() throws -> AgentConfiguration {
        let deviceProfile = try DeviceProfile.load(profile)
        let login = try credentials.resolved()
        return AgentConfiguration(
            deviceID: id ?? login.username ?? "\(deviceProfile.name)-\(ProcessInfo.processInfo.processIdentifier)", profile: deviceProfile,
            brokerHost: broker.host, brokerPort: broker.port, requestTimeout: .milliseconds(Int(timeout * 1000)),
            username: login.username, password: login.password, modelCache: AgentConfiguration.modelCache(option: modelCache),
            fallbackToLocal: !noFallback, offlineQueueLimit: offlineQueue, streamPatches: streamPatches.flatMap(PatchStreaming.init(rawValue:)),
            tls: login.tls, fleetKey: try (fleetKey ?? login.fleetKeyFile).map { try readFleetKey($0, as: { try FleetPublicKey(hex: $0) }) },
            queueDirectory: queueDir)
    }

    /// Runs the agent until its samples are sent, or until SIGTERM/SIGINT: then it sends no new
    /// request, finishes those in flight, announces itself offline and returns (exit status 0).
    public func run() async throws {
        let agent = try Agent(try configuration())
        let input = samples > 0 ? try InputSource.named(source, datasetDirectory: dataset) : nil
        var logger = Logger(label: "cleave.agent")
        logger.logLevel = .notice
        let service = AgentService(agent: agent, source: input, samples: samples, mode: InferenceMode(rawValue: mode), rate: rate, inFlight: inFlight)
        // With --samples the service returns when they are sent: the group then ends as after
        // SIGTERM (without this, ServiceGroup calls the return an unexpected finish and exits 1,
        // printing the whole service, data set included).
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
