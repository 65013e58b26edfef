import ArgumentParser
import CleaveAgentCLI
import CleaveDatasets
import CleaveFederated
import CleaveIdentity
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTrain
import Foundation

/// `cleave fl run`: the coordinator of a federated run over MQTT (and, with `--local`, its fleet).
struct FederatedRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Coordinate a federated training over MQTT: agents train on their own shards, this aggregates.",
        discussion: """
            Publishes the run's task and the global model (retained) under cleave/v1/fl/RUN/, waits until \
            --clients agents have joined (`cleave agent --fl --run RUN --shard K` on each board, K in \
            0..<clients), then runs --rounds synchronous rounds — each selects a share of the online clients \
            (--sample-fraction), waits for their update frames until all have come, the missing ones are \
            offline, or --deadline seconds have passed, aggregates with --strategy and measures the model on \
            the Fashion-MNIST test set — or, for an asynchronous strategy, aggregates as updates arrive \
            (FedFix every --interval seconds) until --rounds aggregations or --duration seconds.

            --local starts everything on this machine: Mosquitto on a free loopback port (unless --broker is \
            given) and --clients agent processes whose boards are emulated from --boards (device profiles, \
            assigned in turn): an update takes at least as long as the profile's `gflops` make it. Agent logs \
            go to --log-dir.

            Prints one line per aggregation (accuracy, loss, updates, bytes, seconds) and ends with \
            `final accuracy NN.NN%`; --csv writes the same per aggregation. With --checkpoint a synchronous \
            run keeps its state after every round and resumes from it: killed (even with SIGKILL) and started \
            again, it continues from its last aggregate while the agents wait.
            Example: cleave fl run --local --strategy fedavg --clients 10 --rounds 20 --local-epochs 1
            """)

    @OptionGroup var strategy: StrategyOptions
    @Option(name: .customLong("run"), help: "Name of the run (its topics are cleave/v1/fl/RUN/…).") var runName: String = "default"
    @Option(help: "Synchronous rounds, or aggregations of an asynchronous run.") var rounds: Int = 50
    @OptionGroup var fleet: FleetShapeOptions
    @Option(help: "Share of the online clients sampled each synchronous round.") var sampleFraction: Double = 1
    @Option(help: "Seconds a synchronous round waits before it drops stragglers.") var deadline: Double?
    @Option(help: "Seconds an asynchronous run lasts at most.") var duration: Double?
    @Option(help: "Seconds between accuracy measurements of an asynchronous run (default: every aggregation).")
    var evaluationInterval: Double?
    @Option(help: "Clients online before the first round (default: all of them).") var startAfter: Int?
    @Option(help: "Update compression (as for fl simulate): float32, float16, int8[-channel], int4[-channel], topk:F or sign.")
    var compression: String = "float32"
    @Flag(help: "Agents do not keep what compression dropped for the next round.") var noErrorFeedback = false
    @Option(help: "Seed of the partition, the model's initialisation and the sampling.") var seed: UInt64 = 0
    @Option(help: "Write one row per aggregation to this CSV file.") var csv: String?
    @Option(help: "Keep the run's state in this file after every round and resume from it (synchronous strategies).")
    var checkpoint: String?
    @Option(help: "Fashion-MNIST folder (the test set; --local agents read the training set there).")
    var dataset: String = FashionMNIST.defaultDirectory
    @Option(help: "Clients use only the first N training images (quick runs).") var trainLimit: Int?
    @Option(help: "Measure accuracy on the first N test images only (quick runs).") var testLimit: Int?
    @Option(help: "Broker as HOST:PORT (default 127.0.0.1:1883; with --local, one is started unless this is given).")
    var broker: BrokerAddress?
    @OptionGroup var credentials: CredentialOptions
    @Option(help: "The fleet signing key (signing.key; a coordinator's --member folder holds it): the task and every global model go out signed.")
    var signingKey: String?
    @Flag(help: "Start the broker and the agents on this machine too, with emulated board speeds.") var local = false
    @Option(parsing: .upToNextOption, help: "--local: device profiles of the agents, assigned in turn (names in --devices or YAML paths).")
    var boards: [String] = ["raspberry-pi-zero-2w", "raspberry-pi-4b-4gb", "raspberry-pi-5-8gb"]
    @Option(help: "Folder of device profiles.") var devices: String = "devices"
    @Option(help: "--local: the last N agents send poisoned updates (robustness runs).") var poisoned: Int = 0
    @Option(help: "--local: poisoning, sign-flip (−10 × the honest update) or noise (Gaussian, σ = 1).") var attack: String = "sign-flip"
    @Option(help: "--local: threads each agent trains with.") var agentThreads: Int = 1
    @Option(help: "--local: folder for the agents' logs (default: a new temporary folder).") var logDir: String?

    func validate() throws {
        guard (0...fleet.clients).contains(poisoned) else { throw ValidationError("--poisoned must be between 0 and --clients") }
        guard agentThreads >= 1 else { throw ValidationError("--agent-threads must be at least 1") }
        if !local, poisoned > 0 { throw ValidationError("--poisoned starts poisoned agents, so it needs --local") }
    }

    func run() async throws {
        var settings = FleetSettings()
        settings.run = runName
        settings.clients = fleet.clients
        settings.rounds = rounds
        settings.partition = try fleet.partitionChoice()
        settings.local = fleet.local
        settings.sampleFraction = sampleFraction
        settings.deadline = deadline
        settings.duration = duration
        settings.evaluationInterval = evaluationInterval
        settings.startAfter = startAfter
        settings.seed = seed
        settings.compression = try UpdateCompression(name: compression)
        settings.errorFeedback = !noErrorFeedback
        settings.trainLimit = trainLimit
        settings.signingKey = try (signingKey ?? credentials.resolved().signingKeyFile).map {
            try readFleetKey($0, as: { try FleetSigningKey(hex: $0) })
        }
        let profilePaths = boards.map { $0.hasSuffix(".yaml") ? $0 : "\(devices)/\($0).yaml" }
        let profiles = try profilePaths.map { try DeviceProfile.load($0) }
        settings.strategy = try strategy.choice(medianUpdate: try medianUpdateSeconds(settings, profiles: profiles))
        try settings.validate()
        var test = try FashionMNIST(split: .test, directory: dataset)
        if let testLimit { test = test.prefix(testLimit) }

        var localBroker: LocalBroker?
        if local, broker == nil {
            localBroker = try LocalBroker()
            print("started mosquitto on 127.0.0.1:\(localBroker!.port) (config in \(localBroker!.directory))")
        }
        let address = broker ?? BrokerAddress(host: "127.0.0.1", port: localBroker?.port ?? 1883)
        let login = try credentials.resolved()
        let transport = try MQTTClient(
            MQTTConfiguration(
                host: address.host, port: address.port, clientID: "cleave-fl-coordinator-\(runName)", username: login.username,
                password: login.password, tls: login.tls, reconnectDelay: (1, 2),
                // A persistent session: updates sent while this process is down wait at the broker.
                sessionExpiry: 3600))
        print(
            "run \(runName): strategy \(settings.strategy); \(fleet.clients) clients, partition \(fleet.partition) α = \(fleet.alpha), seed \(seed)")
        print(
            "local training: \(fleet.localEpochs) epoch(s), batch \(fleet.batchSize), lr \(fleet.learningRate); updates as \(settings.compression)"
                + (settings.compression.isLossy && settings.errorFeedback ? " with error feedback" : ""))
        if let checkpoint, SystemCall.isReadable(checkpoint) { print("checkpoint \(checkpoint) found: resuming from its last round") }

        var fleet: [Process] = []
        defer {
            for agent in fleet where agent.isRunning { agent.terminate() }
            localBroker?.stop()
        }
        let (synchronous, checkpointPath) = (settings.strategy.isSynchronous, checkpoint ?? "")
        let (events, sink) = AsyncStream<FleetEvent>.makeStream()
        let server = try FederatedServer(settings: settings, transport: transport, test: test, checkpoint: checkpoint) { sink.yield($0) }
        let printer = Task {
            var table = AggregationTable(synchronous: synchronous, clock: "t %7.1f s")
            for await event in events {
                switch event {
                case .waiting(let online, let needed): print("waiting for clients: \(online) of \(needed) online")
                case .joined(let client): print("joined: \(client.device) (shard \(client.shard), \(client.examples) examples, \(client.board))")
                case .left(let device): print("left: \(device)")
                case .resumed(let round): print("resumed after round \(round) from \(checkpointPath)")
                case .roundStarted: break
                case .refused(let device, let reason): print("refused an update from \(device): \(reason)")
                case .aggregated(let record): table.add(record)
                }
                fflush(nil)
            }
            return table
        }
        if local { fleet = try startAgents(address: address, profiles: Array(zip(profilePaths, profiles))) }
        let records = try await server.run()
        sink.finish()
        let table = await printer.value
        if let csv { try table.write(csv: csv) }
        print(String(format: "%d aggregations, %.1f s", records.count, table.realSeconds))
        print(String(format: "final accuracy %.2f%%", (records.last?.accuracy ?? 0) * 100))
        for agent in fleet { agent.waitUntilExit() }
        if let failed = fleet.first(where: { $0.terminationStatus != 0 }) {
            print("an agent exited with status \(failed.terminationStatus); see its log in \(logDirectory(localBroker))")
        }
    }

    /// FedFix's default interval: the median time an update takes on the emulated boards.
    private func medianUpdateSeconds(_ settings: FleetSettings, profiles: [DeviceProfile]) throws -> Double {
        guard strategy.strategy == "fedfix", strategy.interval == nil else { return 1 }
        guard local else { throw ValidationError("fedfix over a real fleet needs --interval SECONDS (its aggregation period)") }
        var labels = try FashionMNIST(split: .train, directory: dataset).labels
        if let trainLimit { labels = Array(labels.prefix(trainLimit)) }
        let shares = try settings.partition.split(labels: labels, parties: fleet.clients, seed: seed)
        var generator = SeededGenerator(seed: 0)
        let flops = 6 * Double(SimpleCNN.make(&generator).multiplyAdds(SimpleCNN.inputShape))
        let times = shares.indices.map { Double(shares[$0].count * fleet.localEpochs) * flops / (profiles[$0 % profiles.count].gflops * 1e9) }
            .sorted()
        return times[times.count / 2]
    }

    private func logDirectory(_ broker: LocalBroker?) -> String { logDir ?? broker?.directory ?? FileManager.default.temporaryDirectory.path }

    /// Starts one `cleave agent --fl` process per shard, logging to files.
    private func startAgents(address: BrokerAddress, profiles: [(path: String, profile: DeviceProfile)]) throws -> [Process] {
        let directory = try logDir ?? SystemCall.makeTemporaryDirectory(prefix: "cleave-fl-agents-")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        print("starting \(fleet.clients) agents (logs in \(directory)): \(profiles.map(\.profile.name).joined(separator: ", ")) in turn")
        return try (0..<fleet.clients).map { shard in
            let (path, profile) = profiles[shard % profiles.count]
            var arguments = [
                "agent", "--fl", "--run", runName, "--shard", "\(shard)", "--id", "fl-\(shard)-\(profile.name)", "--broker",
                "\(address.host):\(address.port)", "--profile", path, "--emulate-board", "--threads",
                "\(agentThreads)", "--dataset", dataset,
            ]
            if shard >= fleet.clients - poisoned { arguments += ["--attack", attack] }
            if let username = credentials.username { arguments += ["--username", username] }
            if let file = credentials.passwordFile { arguments += ["--password-file", file] }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            let log = "\(directory)/fl-\(shard).log"
            guard FileManager.default.createFile(atPath: log, contents: nil) else { throw ValidationError("cannot create the agent log \(log)") }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return process
        }
    }
}

/// `cleave agent --fl`: the board's side of a federated run.
struct FederatedAgentOptions: ParsableArguments {
    @Flag(help: "Join a federated run (train on this board's shard) instead of serving inference.") var fl = false
    @Option(help: "--fl: the run to join.") var run: String = "default"
    @Option(help: "--fl: this board's shard of the run's partition (0..<clients).") var shard: Int?
    @Flag(help: "--fl: take at least as long per update as the device profile's gflops would (emulated boards).")
    var emulateBoard = false
    @Option(help: "--fl: threads local training uses (default: every core).") var threads: Int?
    @Option(help: "--fl: send poisoned updates, sign-flip or noise (robustness tests only).") var attack: String?

    func run(agent options: AgentOptions) async throws {
        guard let shard else { throw ValidationError("--fl needs --shard K: which shard of the run's partition this board holds") }
        let profile = try DeviceProfile.load(options.profile)
        let login = try options.credentials.resolved()
        let device = options.id ?? login.username ?? "\(profile.name)-\(ProcessInfo.processInfo.processIdentifier)"
        var settings = FleetClientSettings(run: run, device: device, shard: shard)
        settings.board = profile.name
        settings.fleetKey = try (options.fleetKey ?? login.fleetKeyFile).map { try readFleetKey($0, as: { try FleetPublicKey(hex: $0) }) }
        if emulateBoard { settings.emulatedGflops = profile.gflops }
        switch attack {
        case nil: break
        case "sign-flip": settings.attack = .signFlip(scale: 10)
        case "noise": settings.attack = .noise(standardDeviation: 1)
        case let other?: throw ValidationError("unknown attack '\(other)': choose sign-flip or noise")
        }
        let transport = try MQTTClient(
            MQTTConfiguration(
                host: options.broker.host, port: options.broker.port, clientID: device, username: login.username, password: login.password,
                will: FederatedClient.will(run: run, device: device, shard: shard).asWill, tls: login.tls, reconnectDelay: (1, 2)))
        let train = try FashionMNIST(split: .train, directory: options.dataset)
        let client = try FederatedClient(
            settings: settings, transport: transport, train: train, threads: threads ?? ThreadPool.coreCount,
            observer: { event in Self.report(event, device: device) })
        print("\(device): joining run \(run) on \(options.broker.host):\(options.broker.port) as shard \(shard)")
        try await client.run()
    }

    private static func report(_ event: ClientEvent, device: String) {
        switch event {
        case .joined(let task, let examples):
            print("\(device): run \(task.run), \(task.strategy), \(examples) examples, \(task.epochs) local epoch(s), updates as \(task.compression)")
        case .training(let round, let version): print("\(device): round \(round): training from model version \(version)")
        case .epoch(let round, let epoch, let epochs, let loss):
            print(String(format: "%@: round %d epoch %d/%d loss %.4f", device, round, epoch, epochs, loss))
        case .sent(let round, let bytes, let seconds):
            print(String(format: "%@: round %d: sent %d bytes after %.1f s", device, round, bytes, seconds))
        case .resent(let round): print("\(device): round \(round): the coordinator restarted; sent the update again")
        case .ignored(let reason): print("\(device): ignored a message: \(reason)")
        case .finished: print("\(device): the run is finished")
        }
        fflush(nil)
    }
}

extension MQTTMessage {
    /// This message as a connection's last will.
    var asWill: MQTTConfiguration.Will { MQTTConfiguration.Will(topic: topic, payload: payload, qos: qos, retain: retain) }
}
