import ArgumentParser
import CleaveAgent
import CleaveAgentCLI
import CleaveCoordinator
import CleaveDatasets
import CleaveIdentity
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTrain
import Dispatch
import Foundation
import Logging
import ServiceLifecycle

extension InferenceMode: ExpressibleByArgument {}

/// Prints `line` and flushes standard output, so that a pipe or a file (`cleave demo | tee`,
/// a test reading the output) has it at once rather than when the buffer fills.
func printNow(_ line: String) {
    print(line)
    fflush(nil)
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
    @Option(help: "Frames of one device served at once; more are answered busy (the agent computes them locally).")
    var maxInFlightPerDevice: Int = 64
    @OptionGroup var credentials: CredentialOptions
    @Option(
        help: ArgumentHelp(
            "The fleet signing key (signing.key): sign every control message, for boards pinned to the fleet key.",
            discussion: "A coordinator's --member folder holds it; this option wins over the folder's."))
    var signingKey: String?
    @Option(help: "Make every batch take at least this many milliseconds: a slower coordinator, emulated (fault and overload tests).")
    var emulateBatchMs: Double?
    @Option(
        help: ArgumentHelp(
            "Append one line per frame computed to this file: device/request-id[/frame-crc], mode, batch size.",
            discussion: "An audit trail of the work done; it survives kill -9 (lines are written as frames are computed)."))
    var requestLog: String?

    func run() async throws {
        let login = try credentials.resolved()
        let signing = try (signingKey ?? login.signingKeyFile).map { try readFleetKey($0, as: { try FleetSigningKey(hex: $0) }) }
        var configuration = CoordinatorConfiguration(
            id: id, brokerHost: broker.host, brokerPort: broker.port, maximumBatch: maxBatch, maximumWait: .milliseconds(maxWaitMs),
            threads: threads, maximumInFlightPerDevice: maxInFlightPerDevice, username: login.username, password: login.password, tls: login.tls,
            signingKey: signing)
        configuration.emulatedBatchTime = emulateBatchMs.map { .microseconds(Int($0 * 1000)) }
        configuration.requestLog = requestLog
        let coordinator = try Coordinator(configuration, bundle: try ModelBundle(directory: model))
        let id = self.id
        let service = CoordinatorService(coordinator: coordinator) { stats in
            print(
                "coordinator \(id): \(stats.devicesOnline) devices online, \(stats.answered) answered, \(stats.rejected) rejected, \(stats.busy) busy, \(stats.duplicates) duplicates"
            )
        }
        var logger = Logger(label: "cleave.coordinator")
        logger.logLevel = .notice
        // SIGTERM/SIGINT: leave the shared subscription, answer the frames being computed, exit 0.
        try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
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

    @OptionGroup var options: AgentOptions
    @OptionGroup(title: "Federated learning") var federated: FederatedAgentOptions

    func run() async throws {
        if federated.fl {
            try await federated.run(agent: options)
        } else {
            try await options.run()
        }
    }
}
