import CleaveDatasets
import CleaveIdentity
import CleaveProtocol
import CleaveSupport
import CleaveTrain
import Foundation

/// Everything a federated run over MQTT is set up with (the coordinator's side).
public struct FleetSettings: Sendable {
    /// The run's name: its topics are `cleave/v1/fl/RUN/…`.
    public var run = "default"
    public var strategy: StrategyChoice = .fedAvg
    /// Shards of the partition, one per client.
    public var clients = 10
    public var partition: Partition = .dirichletLabels(alpha: 0.5)
    public var local = LocalTraining()
    public var seed: UInt64 = 0
    public var compression: UpdateCompression = .float32
    public var errorFeedback = true
    /// Clients use only the first N training images (quick runs).
    public var trainLimit: Int?
    /// Synchronous rounds, or aggregations of an asynchronous run.
    public var rounds = 50
    public var sampleFraction = 1.0
    /// Real seconds a synchronous round waits for its updates; stragglers' updates are dropped.
    public var deadline: Double?
    /// Real seconds an asynchronous run lasts at most.
    public var duration: Double?
    /// Real seconds between accuracy measurements of an asynchronous run (nil: every aggregation).
    public var evaluationInterval: Double?
    /// Clients that must be online before the first round (nil: all of them).
    public var startAfter: Int?
    /// The fleet signing key: the task and every global model go out in signed envelopes,
    /// for clients pinned to the fleet key (nil: plain).
    public var signingKey: FleetSigningKey?

    public init() {}

    public func validate() throws {
        try local.validate()
        guard Topic.isValidName(run) else { throw FederatedError("the run name '\(run)' cannot be part of a topic (no '/', '+' or '#')") }
        guard clients >= 1 else { throw FederatedError("a run needs at least one client, got \(clients)") }
        guard rounds >= 1 else { throw FederatedError("a run needs at least one round, got \(rounds)") }
        guard sampleFraction > 0, sampleFraction <= 1 else { throw FederatedError("the sample fraction must be in (0, 1], got \(sampleFraction)") }
        if let deadline, !(deadline > 0) { throw FederatedError("the round deadline must be positive, got \(deadline)") }
        if let startAfter, !(1...clients).contains(startAfter) {
            throw FederatedError("--start-after must be between 1 and the number of clients (\(clients)), got \(startAfter)")
        }
    }

    var task: FederatedTask {
        FederatedTask(
            run: run, strategy: strategy, clients: clients, partition: partition, seed: seed, local: local, compression: compression,
            errorFeedback: errorFeedback, layout: SimpleCNN.layout, trainLimit: trainLimit)
    }

    /// What a checkpoint must have been made with (all but the number of rounds).
    var fingerprint: String {
        let deadline = self.deadline.map { "\($0)" } ?? "none"
        return [
            "fleet", run, strategy.description, "\(clients)", "\(partition)", "\(local)", "\(seed)", "\(compression)", "\(errorFeedback)",
            "\(trainLimit ?? 0)", "\(sampleFraction)", deadline,
        ].joined(separator: " | ")
    }
}

/// What a federated coordinator reports as the run goes.
public enum FleetEvent: Sendable {
    /// Clients online, and how many the first round waits for.
    case waiting(online: Int, needed: Int)
    case joined(ClientAnnouncement)
    case left(device: String)
    case resumed(round: Int)
    /// A synchronous round opened for these shards.
    case roundStarted(round: Int, selected: [Int])
    case refused(device: String, reason: String)
    case aggregated(AggregationRecord)
}

/// The coordinator of a federated run over MQTT: it publishes the task and the global
/// model (retained), collects the clients' update frames, aggregates them with the run's
/// strategy, measures the model on the test set, and checkpoints synchronous rounds.
///
/// One image of the protocol (topics in `docs/wire-format.md`, "Federated learning over
/// MQTT"): the model frame of round r names the shards asked to train; each answers with
/// one update frame on its own updates topic; when all have answered, or the deadline has
/// passed, or the missing ones are offline, the round is aggregated and round r + 1 opens.
/// Asynchronous strategies select every client and aggregate as updates arrive (FedFix at
/// its fixed interval).
///
/// The coordinator keeps an MQTT v5 persistent session, so updates sent while it is down
/// wait at the broker; after a `kill -9` it resumes from its checkpoint and republishes the
/// round, and a client that had already answered it sends the same frame again.
public final class FederatedServer {
    public let settings: FleetSettings
    private let transport: any MessageTransport
    private let evaluator: LocalTrainer
    private let test: FashionMNIST
    private let checkpoint: String?
    private let observer: @Sendable (FleetEvent) -> Void
    private let layout = SimpleCNN.layout
    /// Drawn again at every connection: a client that answered the current round and sees it
    /// republished under another number sends its update again (it may have been lost with
    /// the old process or the broker).
    private var boot = UInt64.random(in: 1...UInt64.max)
    /// Stamps for signed envelopes.
    private var issueClock = IssueClock()

    private var online: [String: ClientAnnouncement] = [:]
    private var global: [Float]
    private var version = 0
    private var records: [AggregationRecord] = []
    private var bytesDown = 0
    private var bytesUp = 0
    private var refusals = 0
    private var elapsedBefore = 0.0
    private var started = ContinuousClock.now

    /// A coordinator for `settings` over `transport`, measuring on `test`; `checkpoint` keeps
    /// synchronous rounds (and resumes a run of the same settings found there).
    public init(
        settings: FleetSettings, transport: any MessageTransport, test: FashionMNIST, checkpoint: String? = nil,
        observer: @escaping @Sendable (FleetEvent) -> Void = { _ in }
    ) throws {
        try settings.validate()
        if checkpoint != nil, !settings.strategy.isSynchronous {
            throw FederatedError("checkpoints are kept for synchronous strategies only; \(settings.strategy.name) is asynchronous")
        }
        self.settings = settings
        self.transport = transport
        self.test = test
        self.checkpoint = checkpoint
        self.observer = observer
        evaluator = LocalTrainer(data: test)
        global = LocalTrainer.initialModel(seed: settings.seed)
    }

    private enum Input {
        case transport(MQTTEvent)
        case tick
    }

    /// Runs the whole training and returns one record per aggregation. Ends when the rounds
    /// (or the asynchronous duration) are done; publishes the task as finished, so clients leave.
    public func run() async throws -> [AggregationRecord] {
        let (inputs, sink) = AsyncStream<Input>.makeStream()
        let pump = try await transport.connect { event in sink.yield(.transport(event)) }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                sink.yield(.tick)
            }
        }
        defer {
            ticker.cancel()
            pump.cancel()
        }
        var machine = settings.strategy.isSynchronous ? Phase.rounds(try RoundMachine(self)) : Phase.arrivals(nil)
        for await input in inputs {
            try Task.checkCancellation()
            switch input {
            case .transport(.connected):
                boot = UInt64.random(in: 1...UInt64.max)
                if !machine.republish(server: self) {
                    // A model retained from an earlier run of this name is not this run's: clear it until the first round.
                    publishModel([])
                }
                subscribe()
            case .transport(.message(let message)):
                guard let topic = Topic(parsing: message.topic) else { continue }
                switch topic {
                case .federatedClient(_, let device): handleAnnouncement(device: device, payload: message.payload)
                case .federatedUpdate(_, let device):
                    bytesUp += message.payload.count
                    try machine.receive(device: device, message: message, server: self)
                default: continue
                }
            case .transport: continue
            case .tick: break
            }
            if try machine.advance(server: self) { break }
        }
        var task = settings.task
        task.finished = true
        publishTask(task)
        try await Task.sleep(for: .milliseconds(200))
        transport.disconnect()
        return records
    }

    // MARK: - Shared by both kinds of run

    /// Subscribes and publishes the task; a failure (the connection dropped again) is retried at the next connection.
    private func subscribe() {
        try? transport.subscribe(Topic.allFederatedClients(run: settings.run), qos: 1)
        try? transport.subscribe(Topic.allFederatedUpdates(run: settings.run), qos: 1)
        publishTask(settings.task)
    }

    private func publishTask(_ task: FederatedTask) {
        let topic = Topic.federatedTask(run: settings.run).path
        guard let payload = try? sealed(Self.json(task), topic: topic) else { return }
        try? transport.publish(MQTTMessage(topic: topic, payload: payload, qos: 1, retain: true))
    }

    /// `payload` in a signed envelope for `topic` when the run has the fleet signing key.
    private func sealed(_ payload: [UInt8], topic: String) throws -> [UInt8] {
        guard let key = settings.signingKey else { return payload }
        return try key.seal(payload, topic: topic, issued: issueClock.next())
    }

    private func handleAnnouncement(device: String, payload: [UInt8]) {
        guard let announcement = try? JSONDecoder().decode(ClientAnnouncement.self, from: Data(payload)), announcement.device == device else {
            observer(.refused(device: device, reason: "its announcement is not a client announcement of this device"))
            return
        }
        guard announcement.online else {
            if online.removeValue(forKey: device) != nil { observer(.left(device: device)) }
            return
        }
        guard (0..<settings.clients).contains(announcement.shard) else {
            observer(.refused(device: device, reason: "shard \(announcement.shard) is not one of the run's \(settings.clients)"))
            return
        }
        if let other = online.first(where: { $0.value.shard == announcement.shard && $0.key != device }) {
            observer(.refused(device: device, reason: "shard \(announcement.shard) is already held by \(other.key)"))
            return
        }
        if online[device] != announcement { observer(.joined(announcement)) }
        online[device] = announcement
    }

    /// The update a device sent, decoded and checked against what the device announced.
    fileprivate func decodeUpdate(device: String, message: MQTTMessage, expectedBase: Int?) -> (ClientUpdate, Double)? {
        do {
            guard let client = online[device] else { throw FederatedError("\(device) has not announced itself as a client of this run") }
            let update = try UpdateCodec.decode(message.payload, layout: layout, expectedBaseVersion: expectedBase)
            guard update.client == client.shard else {
                throw FederatedError("the frame names client \(update.client) but \(device) holds shard \(client.shard)")
            }
            guard update.examples <= client.examples, update.baseVersion <= version else {
                throw FederatedError("the frame claims \(update.examples) examples or base version \(update.baseVersion), beyond what this run has")
            }
            return (update, message.userProperties["loss"].flatMap(Double.init) ?? 0)
        } catch {
            refusals += 1
            observer(.refused(device: device, reason: "\(error)"))
            return nil
        }
    }

    fileprivate var seconds: Double { elapsedBefore + (ContinuousClock.now - started).seconds }

    /// Publishes the global model opening `round`; if the broker is unreachable, it goes out at the next connection.
    fileprivate func publish(round: Int, selected: [Int]?) {
        let frame = ModelFrame(version: version, round: round, selected: selected, boot: boot, weights: global).encode(layout: layout)
        bytesDown += frame.count * (selected?.count ?? online.count)
        publishModel(frame)
    }

    private func publishModel(_ frame: [UInt8]) {
        let topic = Topic.federatedModel(run: settings.run).path
        // An empty payload clears the retained model; it is never signed (clients ignore it).
        guard let payload = frame.isEmpty ? frame : try? sealed(frame, topic: topic) else { return }
        try? transport.publish(MQTTMessage(topic: topic, payload: payload, qos: 1, retain: true))
    }

    /// Records the aggregation just made; reported at once unless `report` is false (the caller reports it after its checkpoint).
    fileprivate func record(loss: Double, updates: Int, dropped: Int, measure: Bool, report: Bool = true) throws {
        let record = AggregationRecord(
            aggregation: version, time: seconds, accuracy: measure ? try evaluator.accuracy(of: global, on: test) : nil, loss: loss,
            updates: updates, dropped: dropped, refused: refusals, bytesDown: bytesDown, bytesUp: bytesUp)
        refusals = 0
        records.append(record)
        if report { observer(.aggregated(record)) }
    }

    /// Gives the last record its accuracy if it was not measured (the run's final line needs one).
    fileprivate func measureLastRecord() throws {
        guard let last = records.last, last.accuracy == nil else { return }
        records[records.count - 1].accuracy = try evaluator.accuracy(of: global, on: test)
        observer(.aggregated(records[records.count - 1]))
    }

    private static func json(_ value: FederatedTask) -> [UInt8] { [UInt8]((try? JSONEncoder().encode(value)) ?? Data()) }

    private static func meanLoss(_ losses: [(examples: Int, loss: Double)]) -> Double {
        let examples = losses.reduce(0) { $0 + $1.examples }
        return examples == 0 ? 0 : losses.reduce(0) { $0 + $1.loss * Double($1.examples) } / Double(examples)
    }

    // MARK: - The two kinds of run

    private enum Phase {
        case rounds(RoundMachine)
        /// Nil until the clients are there.
        case arrivals(ArrivalMachine?)

        mutating func receive(device: String, message: MQTTMessage, server: FederatedServer) throws {
            switch self {
            case .rounds(var machine):
                try machine.receive(device: device, message: message, server: server)
                self = .rounds(machine)
            case .arrivals(var machine?):
                try machine.receive(device: device, message: message, server: server)
                self = .arrivals(machine)
            case .arrivals(nil): _ = server.decodeUpdate(device: device, message: message, expectedBase: nil)
            }
        }

        /// Publishes the current model again (after a reconnection, under the new boot number);
        /// false when there is none yet.
        func republish(server: FederatedServer) -> Bool {
            switch self {
            case .rounds(let machine):
                guard machine.open else { return false }
                server.publish(round: machine.round, selected: machine.selected)
            case .arrivals(let machine):
                guard machine != nil else { return false }
                server.publish(round: server.version + 1, selected: nil)
            }
            return true
        }

        /// Moves the run on; true when it is over.
        mutating func advance(server: FederatedServer) throws -> Bool {
            switch self {
            case .rounds(var machine):
                defer { self = .rounds(machine) }
                return try machine.advance(server: server)
            case .arrivals(var machine?):
                defer { self = .arrivals(machine) }
                return try machine.advance(server: server)
            case .arrivals(nil):
                guard server.readyToStart() else { return false }
                self = .arrivals(try ArrivalMachine(server))
                return false
            }
        }
    }

    /// Whether the run may go on: at first, once enough clients are online; then while any is.
    private func readyToStart() -> Bool {
        if clockStarted { return !online.isEmpty }
        let needed = settings.startAfter ?? settings.clients
        if online.count < needed {
            if !waitingReported {
                waitingReported = true
                observer(.waiting(online: online.count, needed: needed))
            }
            return false
        }
        if !clockStarted {
            // The run's clock starts with its first round, not with the wait for clients.
            clockStarted = true
            started = ContinuousClock.now
        }
        return true
    }
    private var waitingReported = false
    private var clockStarted = false

    /// Synchronous rounds: open, collect, close.
    private struct RoundMachine {
        var aggregator: any RoundAggregator
        var generator: SeededGenerator
        var round = 0
        var selected: [Int] = []
        var opened = ContinuousClock.now
        var received: [Int: (update: ClientUpdate, loss: Double)] = [:]
        var open = false

        init(_ server: FederatedServer) throws {
            aggregator = try server.settings.strategy.roundAggregator()
            generator = SeededGenerator(seed: server.settings.seed ^ 0x5EED_0F_5A3F)
            if let path = server.checkpoint, let saved = try RoundCheckpoint.load(path, fingerprint: server.settings.fingerprint) {
                guard saved.global.count == server.layout.count else { throw FederatedError("the checkpoint \(path) does not fit this run's model") }
                round = saved.round
                server.global = saved.global
                server.version = saved.round
                server.elapsedBefore = saved.time
                server.bytesDown = saved.bytesDown
                server.bytesUp = saved.bytesUp
                server.records = saved.records
                aggregator.state = saved.aggregatorState
                generator = SeededGenerator(seed: saved.sampling)
                server.observer(.resumed(round: saved.round))
            }
        }

        mutating func receive(device: String, message: MQTTMessage, server: FederatedServer) throws {
            guard open, let (update, loss) = server.decodeUpdate(device: device, message: message, expectedBase: round - 1) else { return }
            guard selected.contains(update.client) else {
                server.refusals += 1
                server.observer(.refused(device: device, reason: "shard \(update.client) was not selected for round \(round)"))
                return
            }
            if received[update.client] == nil { received[update.client] = (update, loss) }
        }

        mutating func advance(server: FederatedServer) throws -> Bool {
            if !open {
                guard round < server.settings.rounds else { return true }
                guard server.readyToStart() else { return false }
                try openRound(server: server)
                return false
            }
            let missing = selected.filter { received[$0] == nil }
            let onlineShards = Set(server.online.values.map(\.shard))
            let pastDeadline = server.settings.deadline.map { (ContinuousClock.now - opened).seconds >= $0 } ?? false
            let missingAreGone = !received.isEmpty && server.settings.deadline == nil && missing.allSatisfy { !onlineShards.contains($0) }
            guard missing.isEmpty || pastDeadline || missingAreGone else { return false }
            try closeRound(dropped: missing.count, server: server)
            return round >= server.settings.rounds
        }

        private mutating func openRound(server: FederatedServer) throws {
            round += 1
            let settings = server.settings
            let shards = server.online.values.map(\.shard).sorted()
            let perRound = max(1, Int((settings.sampleFraction * Double(settings.clients)).rounded()))
            selected = Array(shards.shuffled(using: &generator).prefix(perRound)).sorted()
            received = [:]
            opened = ContinuousClock.now
            open = true
            server.observer(.roundStarted(round: round, selected: selected))
            server.publish(round: round, selected: selected)
        }

        private mutating func closeRound(dropped: Int, server: FederatedServer) throws {
            open = false
            // In shard order, so that the sum is the same whatever order the updates arrived in.
            let updates = received.keys.sorted().map { received[$0]! }
            if !updates.isEmpty {
                server.global = try aggregator.aggregate(global: server.global, updates: updates.map(\.update), round: round)
            }
            server.version = round
            try server.record(
                loss: FederatedServer.meanLoss(updates.map { ($0.update.examples, $0.loss) }), updates: updates.count, dropped: dropped,
                measure: true, report: false)
            if let path = server.checkpoint {
                try RoundCheckpoint(
                    fingerprint: server.settings.fingerprint, round: round, time: server.seconds, global: server.global,
                    aggregatorState: aggregator.state, sampling: generator.position, attack: 0, feedback: [], bytesDown: server.bytesDown,
                    bytesUp: server.bytesUp, records: server.records
                ).save(path)
            }
            // Reported once it is safe: a coordinator killed after this line resumes after this round.
            server.observer(.aggregated(server.records[server.records.count - 1]))
        }
    }

    /// Asynchronous aggregation: every client trains all the time; the strategy decides when an update moves the model.
    private struct ArrivalMachine {
        var aggregator: any StreamingAggregator
        var start: Double
        var lastEvaluation = -Double.infinity
        var pending: [(examples: Int, loss: Double)] = []
        var dropped = 0

        init(_ server: FederatedServer) throws {
            let shares = (0..<server.settings.clients).map { shard in
                Double(server.online.values.first { $0.shard == shard }?.examples ?? 0)
            }
            let total = max(shares.reduce(0, +), 1)
            start = server.seconds
            if case .fedFix(let interval, let corrected) = server.settings.strategy {
                // The grid starts now, not at the coordinator's start.
                aggregator = try FixedIntervalAggregation(
                    interval: interval, shares: shares.map { $0 / total }, correctForTime: corrected, start: start)
            } else {
                aggregator = try server.settings.strategy.streamingAggregator(shares: shares.map { $0 / total })
            }
            server.publish(round: 1, selected: nil)
        }

        mutating func receive(device: String, message: MQTTMessage, server: FederatedServer) throws {
            guard let (update, loss) = server.decodeUpdate(device: device, message: message, expectedBase: nil) else { return }
            pending.append((update.examples, loss))
            do {
                if let updated = try aggregator.receive(update, global: server.global, version: server.version, now: server.seconds) {
                    try aggregated(updated, server: server)
                }
            } catch {
                server.refusals += 1
                server.observer(.refused(device: device, reason: "\(error)"))
            }
        }

        mutating func advance(server: FederatedServer) throws -> Bool {
            let now = server.seconds
            if let tick = aggregator.nextTick(after: now), now >= tick,
                let updated = try aggregator.tick(global: server.global, version: server.version, now: now)
            {
                try aggregated(updated, server: server)
            }
            let overTime = server.settings.duration.map { now - start >= $0 } ?? false
            guard server.version >= server.settings.rounds || overTime else { return false }
            try server.measureLastRecord()
            return true
        }

        private mutating func aggregated(_ updated: [Float], server: FederatedServer) throws {
            server.global = updated
            server.version += 1
            let now = server.seconds
            let measure = server.settings.evaluationInterval.map { now - lastEvaluation >= $0 } ?? true
            if measure { lastEvaluation = now }
            try server.record(loss: FederatedServer.meanLoss(pending), updates: pending.count, dropped: dropped, measure: measure)
            pending = []
            server.publish(round: server.version + 1, selected: nil)
        }
    }
}

extension SimpleCNN {
    /// The weight layout of the network federated runs train.
    public static let layout: WeightLayout = {
        var generator = SeededGenerator(seed: 0)
        return WeightLayout(of: make(&generator).parameters)
    }()
}
