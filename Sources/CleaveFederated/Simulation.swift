import CleaveDatasets
import CleaveSupport
import CleaveTensor
import CleaveTrain

/// An emulated board of a simulated fleet: how fast it trains and how fast its link is.
public struct SimulatedBoard: Sendable, Equatable {
    public var name: String
    /// Sustained training speed, in 10⁹ floating-point operations per second (the device profile's `gflops`).
    public var gflops: Double
    /// Link speed both ways, in megabits per second.
    public var linkMbps: Double

    public init(name: String, gflops: Double, linkMbps: Double = 20) {
        self.name = name
        self.gflops = gflops
        self.linkMbps = linkMbps
    }
}

/// Everything a federated run is set up with.
public struct FederatedSettings: Sendable {
    public var strategy: StrategyChoice = .fedAvg
    public var clients = 10
    public var partition: Partition = .dirichletLabels(alpha: 0.5)
    public var local = LocalTraining()
    /// Synchronous rounds; an asynchronous run lasts as long in emulated time as FedAvg's
    /// `rounds` rounds would, unless ``duration`` is set.
    public var rounds = 50
    /// Share of the clients sampled for each synchronous round.
    public var sampleFraction = 1.0
    /// Emulated seconds the server waits for a round's updates; later ones are dropped (stragglers).
    public var deadline: Double?
    /// Probability that a client drops out of a round (or loses an asynchronous update).
    public var dropout = 0.0
    /// Clients that are gone for a run of rounds (synchronous strategies): they send nothing then.
    public var outage: (clients: Set<Int>, rounds: ClosedRange<Int>)?
    /// The boards, assigned to clients in turn (client i runs on `boards[i % boards.count]`).
    public var boards = [SimulatedBoard(name: "generic", gflops: 4)]
    /// Emulated seconds an asynchronous run lasts (nil: as long as FedAvg's rounds take).
    public var duration: Double?
    /// Emulated seconds between accuracy measurements of an asynchronous run (nil: every aggregation).
    public var evaluationInterval: Double?
    public var seed: UInt64 = 0
    /// How clients compress their updates, and whether they keep what compression dropped for the next round.
    public var compression: UpdateCompression = .float32
    public var errorFeedback = true
    /// The last `poisoned` clients send `attack`ed updates instead of what they trained.
    public var poisoned = 0
    public var attack: PoisoningAttack = .signFlip(scale: 10)

    public init() {}

    /// Checks the settings, naming the first one out of range.
    public func validate() throws {
        try local.validate()
        guard clients >= 1 else { throw FederatedError("a run needs at least one client, got \(clients)") }
        guard rounds >= 1 else { throw FederatedError("a run needs at least one round, got \(rounds)") }
        guard sampleFraction > 0, sampleFraction <= 1 else { throw FederatedError("the sample fraction must be in (0, 1], got \(sampleFraction)") }
        guard dropout >= 0, dropout < 1 else { throw FederatedError("the dropout probability must be in [0, 1), got \(dropout)") }
        guard !boards.isEmpty, boards.allSatisfy({ $0.gflops > 0 && $0.linkMbps > 0 }) else {
            throw FederatedError("every board needs a positive speed and link rate")
        }
        guard poisoned >= 0, poisoned <= clients else { throw FederatedError("cannot poison \(poisoned) of \(clients) clients") }
        if let deadline, !(deadline > 0) { throw FederatedError("the round deadline must be positive, got \(deadline)") }
        if let outage {
            guard strategy.isSynchronous else { throw FederatedError("an outage of rounds needs a synchronous strategy") }
            guard outage.clients.allSatisfy({ (0..<clients).contains($0) }) else {
                throw FederatedError("the outage names a client outside 0..<\(clients)")
            }
            guard deadline != nil else {
                throw FederatedError("with an outage a synchronous round needs a deadline (--deadline), or it would wait for ever")
            }
        }
        if dropout > 0, strategy.isSynchronous, deadline == nil {
            throw FederatedError("with dropouts a synchronous round needs a deadline (--deadline), or it would wait for ever")
        }
    }
}

/// What a poisoned client sends instead of its honest update.
public enum PoisoningAttack: Sendable, Equatable, CustomStringConvertible {
    /// The honest delta reversed and scaled (−scale · Δ).
    case signFlip(scale: Float)
    /// Gaussian noise of this standard deviation in place of the delta.
    case noise(standardDeviation: Float)

    public var description: String {
        switch self {
        case .signFlip(let scale): "sign-flipped ×\(scale)"
        case .noise(let deviation): "Gaussian noise σ = \(deviation)"
        }
    }

    func apply(to delta: [Float], generator: inout SeededGenerator) -> [Float] {
        switch self {
        case .signFlip(let scale): delta.map { -scale * $0 }
        case .noise(let deviation): delta.map { _ in deviation * Float(generator.normal()) }
        }
    }
}

/// The state of a run after one aggregation.
public struct AggregationRecord: Sendable, Equatable, Codable {
    /// Aggregations so far (the round, for a synchronous strategy).
    public var aggregation: Int
    /// Emulated seconds since the start.
    public var time: Double
    /// Test accuracy of the global model (0–1); nil when this aggregation was not measured.
    public var accuracy: Double?
    /// Mean local training loss of the updates aggregated, weighted by examples.
    public var loss: Double
    /// Updates aggregated, updates lost to dropouts or the deadline, and updates the server refused.
    public var updates: Int
    public var dropped: Int
    public var refused = 0
    /// Bytes sent to and from the boards so far.
    public var bytesDown: Int
    public var bytesUp: Int
}

/// A federated run on one machine: real local training on each client's share of
/// Fashion-MNIST, emulated time from each board's speed and link, and the strategy's
/// aggregation. Deterministic for a seed.
///
/// Synchronous strategies train a round's clients side by side on the machine's cores;
/// asynchronous ones play the arrivals in emulated-time order.
public final class FederatedSimulation {
    public let settings: FederatedSettings
    /// Each client's sample indices into the training set.
    public let shares: [[Int]]
    public let layout: WeightLayout
    private let test: FashionMNIST
    private let trainers: [LocalTrainer]
    private let flopsPerSample: Double
    private var bytesDown = 0
    private var bytesUp = 0
    private var feedback: [ErrorFeedback]
    private var attackGenerator: SeededGenerator
    /// Why the server refused updates, most recent last.
    public private(set) var refusals: [String] = []

    /// Partitions `train` among the clients and prepares one trainer per core.
    public init(settings: FederatedSettings, train: FashionMNIST, test: FashionMNIST, threads: Int = ThreadPool.coreCount) throws {
        try settings.validate()
        self.settings = settings
        shares = try settings.partition.split(labels: train.labels, parties: settings.clients, seed: settings.seed)
        if let empty = shares.firstIndex(where: \.isEmpty) {
            throw FederatedError("the partition left client \(empty) without samples; use fewer clients or a larger α")
        }
        self.test = test
        feedback = Array(repeating: ErrorFeedback(), count: settings.clients)
        attackGenerator = SeededGenerator(seed: settings.seed ^ 0xBAD_5EED)
        trainers = (0..<max(1, threads)).map { _ in LocalTrainer(data: train) }
        layout = trainers[0].layout
        // Forward 2 FLOPs per multiply-add, backward twice that.
        flopsPerSample = 6 * Double(trainers[0].network.multiplyAdds(SimpleCNN.inputShape))
        ThreadPool(threads: 1).configureBLASForOwnThreads()
    }

    /// Emulated seconds for client `client` to fetch the model, train and send its update.
    public func updateSeconds(client: Int) -> Double {
        let board = settings.boards[client % settings.boards.count]
        let transfer = 2 * Double(layout.count * 4 * 8) / (board.linkMbps * 1e6)
        let compute = Double(shares[client].count * settings.local.epochs) * flopsPerSample / (board.gflops * 1e9)
        return transfer + compute
    }

    /// Runs the whole training and returns one record per aggregation; `observer` sees each as it happens.
    ///
    /// With `checkpoint`, a synchronous run saves its state to that file after every round
    /// (written whole to a temporary name, `fsync`ed and renamed over the old one, so a
    /// crash leaves the last complete round), and a run that finds the file of the same
    /// settings resumes after its round: killed and restarted, it ends as it would have.
    public func run(checkpoint: String? = nil, observer: (AggregationRecord) -> Void = { _ in }) throws -> [AggregationRecord] {
        bytesDown = 0
        bytesUp = 0
        refusals = []
        feedback = Array(repeating: ErrorFeedback(), count: settings.clients)
        attackGenerator = SeededGenerator(seed: settings.seed ^ 0xBAD_5EED)
        let initial = LocalTrainer.initialModel(seed: settings.seed)
        guard settings.strategy.isSynchronous else {
            if checkpoint != nil {
                throw FederatedError("checkpoints are kept for synchronous strategies only; \(settings.strategy.name) is asynchronous")
            }
            return try runArrivals(from: initial, observer: observer)
        }
        return try runRounds(from: initial, checkpoint: checkpoint, observer: observer)
    }

    /// The round number a checkpoint file holds, if it is one of this run's settings.
    public func resumableRound(checkpoint: String) throws -> Int? {
        try RoundCheckpoint.load(checkpoint, fingerprint: fingerprint)?.round
    }

    /// Test accuracy of `weights` on the held-out set.
    public func accuracy(of weights: [Float]) throws -> Double { try trainers[0].accuracy(of: weights, on: test) }

    // MARK: - Synchronous rounds

    private func runRounds(from initial: [Float], checkpoint: String?, observer: (AggregationRecord) -> Void) throws -> [AggregationRecord] {
        var aggregator = try settings.strategy.roundAggregator()
        var generator = SeededGenerator(seed: settings.seed ^ 0x5EED_0F_5A3F)
        var global = initial
        var time = 0.0
        var records: [AggregationRecord] = []
        var first = 1
        if let checkpoint, let saved = try RoundCheckpoint.load(checkpoint, fingerprint: fingerprint) {
            guard saved.global.count == layout.count, saved.feedback.count == settings.clients else {
                throw FederatedError("the checkpoint \(checkpoint) does not fit this run's model")
            }
            first = saved.round + 1
            time = saved.time
            global = saved.global
            aggregator.state = saved.aggregatorState
            generator = SeededGenerator(seed: saved.sampling)
            attackGenerator = SeededGenerator(seed: saved.attack)
            feedback = saved.feedback
            bytesDown = saved.bytesDown
            bytesUp = saved.bytesUp
            records = saved.records
        }
        let perRound = max(1, Int((settings.sampleFraction * Double(settings.clients)).rounded()))
        for round in first..<(settings.rounds + 1) {
            let sampled = Array(Array(0..<settings.clients).shuffled(using: &generator).prefix(perRound)).sorted()
            let gone = settings.outage.map { $0.rounds.contains(round) ? $0.clients : [] } ?? []
            let dropouts = sampled.filter { client in generator.uniform() < settings.dropout || gone.contains(client) }
            let durations = sampled.map { updateSeconds(client: $0) }
            let reporting = zip(sampled, durations).filter { client, seconds in
                !dropouts.contains(client) && seconds <= (settings.deadline ?? .infinity)
            }.map(\.0)
            let slowest = zip(sampled, durations).filter { reporting.contains($0.0) }.map(\.1).max() ?? 0
            time += reporting.count < sampled.count ? (settings.deadline ?? slowest) : slowest
            bytesDown += sampled.count * layout.count * 4
            let results = try trainInParallel(reporting, from: global, round: round)
            let sent = zip(reporting, results).map { ClientUpdate(client: $0, examples: $1.examples, delta: $1.delta, baseVersion: round - 1) }
            let updates = try sent.compactMap { try transmit($0, expectedBase: round - 1) }
            if !updates.isEmpty { global = try aggregator.aggregate(global: global, updates: updates, round: round) }
            let record = AggregationRecord(
                aggregation: round, time: time, accuracy: try accuracy(of: global), loss: Self.meanLoss(results), updates: updates.count,
                dropped: sampled.count - reporting.count, refused: sent.count - updates.count, bytesDown: bytesDown, bytesUp: bytesUp)
            records.append(record)
            if let checkpoint {
                try RoundCheckpoint(
                    fingerprint: fingerprint, round: round, time: time, global: global, aggregatorState: aggregator.state,
                    sampling: generator.position, attack: attackGenerator.position, feedback: feedback, bytesDown: bytesDown, bytesUp: bytesUp,
                    records: records
                ).save(checkpoint)
            }
            observer(record)
        }
        return records
    }

    /// The settings a checkpoint must have been made with (all but the number of rounds, which a resumed run may extend).
    private var fingerprint: String {
        let deadline = settings.deadline.map { "\($0)" } ?? "none"
        let sizes = shares.map { "\($0.count)" }.joined(separator: ",")
        var parts: [String] = [settings.strategy.description, "\(settings.clients)", "\(settings.partition)", "\(settings.local)"]
        let outage = settings.outage.map { "\($0.clients.sorted())@\($0.rounds)" } ?? "none"
        parts += ["\(settings.sampleFraction)", deadline, "\(settings.dropout)", outage, "\(settings.boards)", "\(settings.seed)"]
        parts += ["\(settings.compression)", "\(settings.errorFeedback)", "\(settings.poisoned)", "\(settings.attack)", sizes]
        return parts.joined(separator: " | ")
    }

    /// Trains `clients` from `global`, spread over the trainers (one thread each).
    private func trainInParallel(_ clients: [Int], from global: [Float], round: Int) throws -> [LocalResult] {
        var outcomes = [Result<LocalResult, any Error>?](repeating: nil, count: clients.count)
        let workers = min(trainers.count, clients.count)
        outcomes.withUnsafeMutableBufferPointer { slots in
            ThreadPool(threads: workers).parallelFor(workers) { range in
                for worker in range {
                    for position in stride(from: worker, to: clients.count, by: workers) {
                        let client = clients[position]
                        slots[position] = Result {
                            try trainers[worker].train(
                                from: global, samples: shares[client], settings: localSettings, seed: trainingSeed(client: client, step: round))
                        }
                    }
                }
            }
        }
        return try outcomes.map { try $0!.get() }
    }

    // MARK: - Asynchronous arrivals

    /// One client's update in flight: what it started from and when it arrives.
    private struct InFlight {
        var client: Int
        var baseVersion: Int
        var arrival: Double
        var result: LocalResult
        var lost: Bool
    }

    private func runArrivals(from initial: [Float], observer: (AggregationRecord) -> Void) throws -> [AggregationRecord] {
        let total = Double(shares.reduce(0) { $0 + $1.count })
        var aggregator = try settings.strategy.streamingAggregator(shares: shares.map { Double($0.count) / total })
        let waitsForAggregation: Bool
        if case .fedFix = settings.strategy { waitsForAggregation = true } else { waitsForAggregation = false }
        let roundTime = (0..<settings.clients).map { updateSeconds(client: $0) }.max() ?? 0
        let duration = settings.duration ?? roundTime * Double(settings.rounds)
        var generator = SeededGenerator(seed: settings.seed ^ 0xA5_1C_0F_F1)
        var global = initial
        var version = 0
        var starts = 0
        var records: [AggregationRecord] = []
        var lastEvaluation = -Double.infinity
        var aggregatedLoss: [LocalResult] = []
        var dropped = 0
        var refused = 0

        func start(_ client: Int, at time: Double) throws -> InFlight {
            starts += 1
            bytesDown += layout.count * 4
            let result = try trainers[0].train(
                from: global, samples: shares[client], settings: localSettings, seed: trainingSeed(client: client, step: starts))
            return InFlight(
                client: client, baseVersion: version, arrival: time + updateSeconds(client: client), result: result,
                lost: generator.uniform() < settings.dropout)
        }

        var inFlight = try (0..<settings.clients).map { try start($0, at: 0) }
        var idle: [Int] = []
        var now = 0.0
        while now < duration {
            let next = inFlight.indices.min { inFlight[$0].arrival < inFlight[$1].arrival }
            let tick = aggregator.nextTick(after: now)
            var updated: [Float]?
            if let next, tick.map({ inFlight[next].arrival <= $0 }) ?? true {
                let flight = inFlight.remove(at: next)
                now = flight.arrival
                guard now < duration else { break }
                if flight.lost {
                    dropped += 1
                } else {
                    bytesUp += layout.count * 4
                    aggregatedLoss.append(flight.result)
                    let update = ClientUpdate(
                        client: flight.client, examples: flight.result.examples, delta: flight.result.delta, baseVersion: flight.baseVersion)
                    updated = try aggregator.receive(update, global: global, version: version, now: now)
                }
                if waitsForAggregation && updated == nil { idle.append(flight.client) } else { inFlight.append(try start(flight.client, at: now)) }
            } else if let tick {
                now = tick
                guard now < duration else { break }
                updated = try aggregator.tick(global: global, version: version, now: now)
            } else {
                break
            }
            guard let updated else { continue }
            global = updated
            version += 1
            for client in idle { inFlight.append(try start(client, at: now)) }
            idle.removeAll()
            let measure = settings.evaluationInterval.map { now - lastEvaluation >= $0 } ?? true
            if measure { lastEvaluation = now }
            let record = AggregationRecord(
                aggregation: version, time: now, accuracy: measure ? try accuracy(of: global) : nil, loss: Self.meanLoss(aggregatedLoss),
                updates: aggregatedLoss.count - refused, dropped: dropped, refused: refused, bytesDown: bytesDown, bytesUp: bytesUp)
            aggregatedLoss.removeAll()
            dropped = 0
            refused = 0
            records.append(record)
            observer(record)
        }
        if var last = records.last, last.accuracy == nil {
            last.accuracy = try accuracy(of: global)
            records[records.count - 1] = last
            observer(last)
        }
        return records
    }

    // MARK: - The wire

    /// What the server receives of a client's update: poisoned if the client is one of the
    /// attackers, compressed into an update frame (with the client's error feedback), decoded
    /// and checked. Nil when the server refuses it (the reason goes to ``refusals``).
    private func transmit(_ honest: ClientUpdate, expectedBase: Int?) throws -> ClientUpdate? {
        var update = honest
        if honest.client >= settings.clients - settings.poisoned {
            update.delta = settings.attack.apply(to: honest.delta, generator: &attackGenerator)
        }
        do {
            let frame =
                settings.errorFeedback && settings.compression.isLossy
                ? try feedback[update.client].encode(update, layout: layout, compression: settings.compression)
                : UpdateCodec.encode(update, layout: layout, compression: settings.compression)
            bytesUp += frame.count
            return try UpdateCodec.decode(frame, layout: layout, expectedBaseVersion: expectedBase)
        } catch {
            refusals.append("\(error)")
            return nil
        }
    }

    // MARK: - Helpers

    private var localSettings: LocalTraining {
        var local = settings.local
        local.proximalMu = settings.strategy.proximalMu
        return local
    }

    private func trainingSeed(client: Int, step: Int) -> UInt64 { LocalTrainer.seed(run: settings.seed, client: client, step: step) }

    private static func meanLoss(_ results: [LocalResult]) -> Double {
        let examples = results.reduce(0) { $0 + $1.examples }
        guard examples > 0 else { return 0 }
        return results.reduce(0) { $0 + $1.loss * Double($1.examples) } / Double(examples)
    }
}
