import ArgumentParser
import CleaveDatasets
import CleaveFederated
import CleaveProtocol
import Foundation

struct FederatedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fl",
        abstract: "Federated learning: boards train on their own data, a server aggregates.",
        subcommands: [FederatedSimulate.self, FederatedRun.self])
}

/// The strategy options shared by federated commands.
struct StrategyOptions: ParsableArguments {
    @Option(
        help: """
            Aggregation: fedavg, fedprox, fedadam, fedmedian, trimmed-mean, krum, multi-krum (synchronous); \
            fedasync, fedbuff, fedfix (asynchronous).
            """)
    var strategy: String = "fedavg"
    @Option(help: "FedProx's proximal weight μ.") var mu: Float = 0.01
    @Option(help: "Server learning rate (FedAdam's η, FedBuff's η_g).") var serverLearningRate: Double?
    @Option(help: "Trimmed mean: share cut from each end, in [0, 0.5).") var trim: Double = 0.1
    @Option(help: "Krum: number of Byzantine clients tolerated (f).") var malicious: Int = 0
    @Option(help: "Multi-Krum: number of best-scored models averaged.") var keep: Int = 3
    @Option(help: "Asynchronous FedAvg: mixing rate α of a fresh update.") var mixing: Double = 0.5
    @Option(help: "Staleness weight exponent a in (1 + s)^-a (FedAsync).") var stalenessExponent: Double = 0.5
    @Option(help: "FedBuff: updates per aggregation (K).") var buffer: Int = 5
    @Option(help: "FedFix: emulated seconds between aggregations (default: the clients' median update time).") var interval: Double?
    @Flag(help: "FedFix: divide each update's data share by its chance of arriving in an interval (weighs slow boards up).")
    var timeCorrectedWeights = false

    func choice(medianUpdate: Double) throws -> StrategyChoice {
        switch strategy {
        case "fedavg": return .fedAvg
        case "fedprox": return .fedProx(mu: mu)
        case "fedadam": return .fedAdam(learningRate: serverLearningRate ?? 0.01)
        case "fedmedian": return .fedMedian
        case "trimmed-mean": return .trimmedMean(beta: trim)
        case "krum": return .krum(malicious: malicious, keep: 0)
        case "multi-krum": return .krum(malicious: malicious, keep: keep)
        case "fedasync": return .fedAsync(alpha: mixing, exponent: stalenessExponent)
        case "fedbuff": return .fedBuff(bufferSize: buffer, serverLearningRate: serverLearningRate ?? 1)
        case "fedfix": return .fedFix(interval: interval ?? medianUpdate, correctForTime: timeCorrectedWeights)
        default:
            throw ValidationError(
                "unknown strategy '\(strategy)': choose fedavg, fedprox, fedadam, fedmedian, trimmed-mean, krum, multi-krum, fedasync, fedbuff or fedfix"
            )
        }
    }
}

struct FederatedSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run a federated training on this machine: real local training, emulated boards and time.",
        discussion: """
            Splits Fashion-MNIST's 60,000 training images among --clients parties (niid-bench's label skew \
            Dir(α) by default), trains niid-bench's simple CNN on each party's share with real SGD, and \
            aggregates with --strategy. Time is emulated: each client runs on a board from --boards (device \
            profiles, assigned in turn) whose `gflops` sets how long its local epochs take, plus the model's \
            transfer over --link-mbps. Synchronous strategies wait for every sampled client each round (or \
            until --deadline); asynchronous ones aggregate as updates arrive and run as long in emulated time \
            as --rounds synchronous rounds would take on the slowest board (or --duration).

            Prints one line per aggregation (accuracy, loss, bytes, emulated time) and ends with \
            `final accuracy NN.NN%`; --csv writes the same per aggregation. The same seed gives the same run.
            Example (niid-bench): cleave fl simulate --strategy fedavg --clients 10 --alpha 0.5 --rounds 50 --local-epochs 10
            """)

    @OptionGroup var strategy: StrategyOptions
    @Option(help: "Synchronous rounds (asynchronous runs last as long as this many rounds would).") var rounds: Int = 50
    @OptionGroup var fleet: FleetShapeOptions
    @Option(help: "Share of clients sampled each synchronous round.") var sampleFraction: Double = 1
    @Option(help: "Emulated seconds a synchronous round waits before dropping stragglers.") var deadline: Double?
    @Option(help: "Probability a client drops out of a round (or loses an asynchronous update).") var dropout: Double = 0
    @Option(help: "Clients gone for a run of rounds, as CLIENTS@FIRST-LAST (e.g. 0,1,2@5-9); needs --deadline.") var outage: String?
    @Option(
        parsing: .upToNextOption,
        help: "Device profiles the clients run on, assigned in turn (names in --devices or YAML paths).")
    var boards: [String] = ["raspberry-pi-4b-4gb"]
    @Option(help: "Folder of device profiles.") var devices: String = "devices"
    @Option(help: "Emulated link speed of every board, Mbit/s.") var linkMbps: Double = 20
    @Option(help: "Emulated seconds an asynchronous run lasts (default: --rounds rounds of the slowest board).") var duration: Double?
    @Option(help: "Emulated seconds between accuracy measurements of an asynchronous run (default: every aggregation).")
    var evaluationInterval: Double?
    @Option(
        help: """
            Update compression: float32, float16, int8, int8-channel, int4, int4-channel, topk:F (the F largest \
            magnitudes of each tensor) or sign (1 bit per value and one scale).
            """)
    var compression: String = "float32"
    @Flag(help: "Do not keep what compression dropped for the next round (no error feedback).") var noErrorFeedback = false
    @Option(help: "Number of clients (the last ones) that send poisoned updates.") var poisoned: Int = 0
    @Option(help: "Poisoning: sign-flip (−10 × the honest update) or noise (Gaussian, σ = 1).") var attack: String = "sign-flip"
    @Option(help: "Seed of the partition, the model's initialisation and the local shuffling.") var seed: UInt64 = 0
    @Option(help: "Write one row per aggregation to this CSV file.") var csv: String?
    @Option(help: "Write each client's training-sample indices to this JSON file (to rerun the partition elsewhere).")
    var partitionOut: String?
    @Option(
        help: """
            Keep the run's state in this file after every round (synchronous strategies) and resume from it: \
            a run killed and started again with the same options ends as it would have.
            """)
    var checkpoint: String?
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory
    @Option(help: "Use only the first N training images (quick runs).") var trainLimit: Int?
    @Option(help: "Measure accuracy on the first N test images only (quick runs).") var testLimit: Int?
    @Option(help: "Threads training clients side by side (default: one per core).") var threads: Int?

    func run() async throws {
        var settings = FederatedSettings()
        settings.clients = fleet.clients
        settings.rounds = rounds
        settings.partition = try fleet.partitionChoice()
        settings.local = fleet.local
        settings.sampleFraction = sampleFraction
        settings.deadline = deadline
        settings.dropout = dropout
        if let outage { settings.outage = try parseOutage(outage) }
        settings.boards = try boards.map { name in
            let profile = try DeviceProfile.load(name.hasSuffix(".yaml") ? name : "\(devices)/\(name).yaml")
            return SimulatedBoard(name: profile.name, gflops: profile.gflops, linkMbps: linkMbps)
        }
        settings.duration = duration
        settings.evaluationInterval = evaluationInterval
        settings.seed = seed
        settings.compression = try UpdateCompression(name: compression)
        settings.errorFeedback = !noErrorFeedback
        settings.poisoned = poisoned
        switch attack {
        case "sign-flip": settings.attack = .signFlip(scale: 10)
        case "noise": settings.attack = .noise(standardDeviation: 1)
        default: throw ValidationError("unknown attack '\(attack)': choose sign-flip or noise")
        }
        var train = try FashionMNIST(split: .train, directory: dataset)
        var test = try FashionMNIST(split: .test, directory: dataset)
        if let trainLimit { train = train.prefix(trainLimit) }
        if let testLimit { test = test.prefix(testLimit) }
        // The strategy's default FedFix interval needs the boards' update times: plan with FedAvg first.
        let probe = try FederatedSimulation(settings: settings, train: train, test: test, threads: 1)
        let updateTimes = (0..<fleet.clients).map { probe.updateSeconds(client: $0) }
        settings.strategy = try strategy.choice(medianUpdate: updateTimes.sorted()[updateTimes.count / 2])
        let simulation = try FederatedSimulation(
            settings: settings, train: train, test: test, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)

        if let partitionOut {
            try JSONEncoder().encode(simulation.shares).write(to: URL(fileURLWithPath: partitionOut))
        }
        let sizes = simulation.shares.map(\.count)
        print("strategy \(settings.strategy); \(fleet.clients) clients, partition \(fleet.partition) α = \(fleet.alpha), seed \(seed)")
        print("client samples: \(sizes.map(String.init).joined(separator: " "))")
        print(
            "updates as \(settings.compression)\(settings.compression.isLossy && settings.errorFeedback ? " with error feedback" : "")"
                + (poisoned > 0 ? "; the last \(poisoned) clients send \(settings.attack) updates" : ""))
        print(
            String(
                format: "boards: %@; update time %.1f–%.1f s emulated; model %d parameters", boards.joined(separator: ", "),
                updateTimes.min() ?? 0, updateTimes.max() ?? 0, simulation.layout.count))
        var table = AggregationTable(synchronous: settings.strategy.isSynchronous, clock: "t %8.1f s")
        if let checkpoint, let round = try simulation.resumableRound(checkpoint: checkpoint) {
            print("resuming after round \(round) from \(checkpoint)")
        }
        let records = try simulation.run(checkpoint: checkpoint) { table.add($0) }
        if let csv { try table.write(csv: csv) }
        if let reason = simulation.refusals.last { print("refused \(simulation.refusals.count) updates; the last because \(reason)") }
        let final = records.last?.accuracy ?? 0
        print(
            String(
                format: "emulated time %.1f s, %d aggregations, %.1f s real", records.last?.time ?? 0, records.count,
                table.realSeconds))
        print(String(format: "final accuracy %.2f%%", final * 100))
    }

    private func parseOutage(_ text: String) throws -> (clients: Set<Int>, rounds: ClosedRange<Int>) {
        let halves = text.split(separator: "@")
        let clients = halves.first.map { $0.split(separator: ",").compactMap { Int($0) } } ?? []
        let bounds = halves.count == 2 ? halves[1].split(separator: "-").compactMap { Int($0) } : []
        guard halves.count == 2, !clients.isEmpty, clients.count == halves[0].split(separator: ",").count, bounds.count == 2, bounds[0] >= 1,
            bounds[0] <= bounds[1]
        else { throw ValidationError("--outage '\(text)' is not CLIENTS@FIRST-LAST, e.g. 0,1,2@5-9") }
        return (Set(clients), bounds[0]...bounds[1])
    }
}

private func formatMegabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

/// The per-aggregation progress line and CSV rows of `cleave fl simulate` and `cleave fl run`.
struct AggregationTable {
    let synchronous: Bool
    /// How the record's time is shown (emulated or real seconds).
    let clock: String
    private(set) var rows = ["aggregation,time_s,accuracy,loss,updates,dropped,refused,bytes_down,bytes_up"]
    private let started = Date()

    init(synchronous: Bool, clock: String) {
        self.synchronous = synchronous
        self.clock = clock
    }

    var realSeconds: Double { Date().timeIntervalSince(started) }

    /// Prints `record`'s line and keeps its row.
    mutating func add(_ record: AggregationRecord) {
        let accuracy = record.accuracy.map { String(format: "%6.2f%%", $0 * 100) } ?? "      -"
        let counts =
            "updates \(record.updates)" + (record.dropped > 0 ? " dropped \(record.dropped)" : "")
            + (record.refused > 0 ? " refused \(record.refused)" : "")
        print(
            String(
                format: "%@ %4d  \(clock)  accuracy %@  loss %.4f  %@  ↓%@ ↑%@  (%.0f s real)", synchronous ? "round" : "aggregation",
                record.aggregation, record.time, accuracy, record.loss, counts, formatMegabytes(record.bytesDown), formatMegabytes(record.bytesUp),
                realSeconds))
        fflush(nil)
        rows.append(
            "\(record.aggregation),\(String(format: "%.3f", record.time)),\(record.accuracy.map { String(format: "%.4f", $0) } ?? ""),"
                + "\(String(format: "%.5f", record.loss)),\(record.updates),\(record.dropped),\(record.refused),\(record.bytesDown),\(record.bytesUp)"
        )
    }

    func write(csv: String) throws { try (rows.joined(separator: "\n") + "\n").write(toFile: csv, atomically: true, encoding: .utf8) }
}

/// The clients, their partition and their local training: the same options for `fl simulate` and `fl run`.
struct FleetShapeOptions: ParsableArguments {
    @Option(help: "Number of clients (shards of the partition).") var clients: Int = 10
    @Option(help: "Partition: labels (Dirichlet label skew), quantity (Dirichlet sizes) or iid.") var partition: String = "labels"
    @Option(help: "Dirichlet concentration α of the partition (smaller: more skewed).") var alpha: Double = 0.5
    @Option(help: "Local epochs per round.") var localEpochs: Int = 10
    @Option(help: "Local batch size.") var batchSize: Int = 64
    @Option(help: "Local SGD learning rate (momentum 0.9).") var learningRate: Float = 0.01

    /// The partition `--partition` and `--alpha` give.
    func partitionChoice() throws -> Partition {
        switch partition {
        case "labels": .dirichletLabels(alpha: alpha)
        case "quantity": .dirichletQuantity(alpha: alpha)
        case "iid": .iid
        default: throw ValidationError("unknown partition '\(partition)': choose labels, quantity or iid")
        }
    }

    var local: LocalTraining { LocalTraining(epochs: localEpochs, batchSize: batchSize, learningRate: learningRate) }
}
