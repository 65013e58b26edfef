import CleaveDatasets
import CleaveIdentity
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTrain
import Foundation
import Synchronization

/// Who a federated client is and how it runs.
public struct FleetClientSettings: Sendable {
    public var run = "default"
    public var device: String
    /// Its shard of the run's partition: the data this board holds.
    public var shard: Int
    /// The device profile's name, for the coordinator's logs.
    public var board = "generic"
    /// Emulate this board speed (GFLOPS): an update takes at least as long as its local epochs
    /// would there (the coordinator's `--local` fleet; nil on a real board).
    public var emulatedGflops: Double?
    /// Send this instead of the honest update (robustness tests).
    public var attack: PoisoningAttack?
    /// The fleet's public key: take the task and global models only signed by it (and not
    /// older than the last taken per topic); nil takes plain ones.
    public var fleetKey: FleetPublicKey?

    public init(run: String = "default", device: String, shard: Int) {
        self.run = run
        self.device = device
        self.shard = shard
    }
}

/// What a federated client reports as it works.
public enum ClientEvent: Sendable {
    case joined(task: FederatedTask, examples: Int)
    case training(round: Int, version: Int)
    case epoch(round: Int, epoch: Int, of: Int, loss: Double)
    case sent(round: Int, bytes: Int, seconds: Double)
    /// The same update again, for a coordinator that restarted in the middle of its round.
    case resent(round: Int)
    case ignored(reason: String)
    case finished
}

/// A board's side of a federated run over MQTT: reads the task, takes its own shard of the
/// training set, trains on each global model it is asked to (on its own thread, one local
/// epoch after another), and sends the change as an update frame, compressed with error
/// feedback that stays on the board. Leaves when the task says the run is finished.
public final class FederatedClient {
    public let settings: FleetClientSettings
    private let transport: any MessageTransport
    private let train: FashionMNIST
    private let observer: @Sendable (ClientEvent) -> Void
    private let worker: TrainingWorker
    private let layout = SimpleCNN.layout

    private var task: FederatedTask?
    private var samples: [Int] = []
    private var compression: UpdateCompression = .float32
    private var feedback = ErrorFeedback()
    private var attackGenerator: SeededGenerator
    private var latest: ModelFrame?
    /// Per topic, refuses signed messages older than the last one taken.
    private var replayGuards: [String: ReplayGuard] = [:]
    private var busy = false
    private var starts = 0
    /// The last round answered (synchronous), the base version of the last update, the coordinator process it went to, and its frame.
    private var lastRound = 0
    private var lastBase = -1
    private var lastBoot: UInt64 = 0
    private var lastFrame: [UInt8]?
    private var lastLoss = 0.0
    /// An update that could not be handed to the broker (the connection was down): sent at the next connection.
    private var unsent: (frame: [UInt8], loss: Double)?

    /// A client over `transport` holding `train` (the board's copy of the training images);
    /// `threads` is how many OpenBLAS may use.
    public init(
        settings: FleetClientSettings, transport: any MessageTransport, train: FashionMNIST, threads: Int = ThreadPool.coreCount,
        observer: @escaping @Sendable (ClientEvent) -> Void = { _ in }
    ) throws {
        guard Topic.isValidName(settings.run), Topic.isValidName(settings.device) else {
            throw FederatedError("the run '\(settings.run)' and device '\(settings.device)' must be topic names (no '/', '+' or '#')")
        }
        guard settings.shard >= 0 else { throw FederatedError("the shard must be non-negative, got \(settings.shard)") }
        if let gflops = settings.emulatedGflops, !(gflops > 0) { throw FederatedError("the emulated board speed must be positive") }
        self.settings = settings
        self.transport = transport
        self.train = train
        self.observer = observer
        worker = TrainingWorker(LocalTrainer(data: train))
        attackGenerator = SeededGenerator(seed: 0xBAD_5EED ^ UInt64(settings.shard))
        ThreadPool(threads: max(1, threads)).configureBLAS()
    }

    /// The will to connect with: the broker marks the client offline if it vanishes.
    public static func will(run: String, device: String, shard: Int) -> MQTTMessage {
        let gone = ClientAnnouncement(device: device, shard: shard, examples: 0, online: false, board: "")
        return MQTTMessage(
            topic: Topic.federatedClient(run: run, device: device).path, payload: [UInt8]((try? JSONEncoder().encode(gone)) ?? Data()), qos: 1,
            retain: true)
    }

    private enum Input: Sendable {
        case transport(MQTTEvent)
        case trained(Result<LocalResult, FederatedError>, base: ModelFrame, seconds: Double)
    }

    /// Takes part until the run is finished (returns) or the task cannot be trained here (throws).
    public func run() async throws {
        let (inputs, sink) = AsyncStream<Input>.makeStream()
        let pump = try await transport.connect { event in sink.yield(.transport(event)) }
        defer { pump.cancel() }
        var leaving = false
        for await input in inputs {
            switch input {
            case .transport(.connected):
                // Failures here mean the connection dropped again: all of it is redone at the next one.
                try? transport.subscribe(Topic.federatedTask(run: settings.run).path, qos: 1)
                try? transport.subscribe(Topic.federatedModel(run: settings.run).path, qos: 1)
                if task != nil { try? announce(online: true) }
                if let unsent {
                    self.unsent = nil
                    publishUpdate(unsent.frame, loss: unsent.loss)
                }
            case .transport(.message(let message)):
                guard !message.payload.isEmpty else { continue }  // the coordinator cleared the model: a new run
                guard let payload = verified(message) else { continue }
                switch Topic(parsing: message.topic) {
                case .federatedTask?: leaving = try take(taskPayload: payload) || leaving
                case .federatedModel?:
                    do {
                        latest = try ModelFrame.decode(payload, layout: layout)
                    } catch {
                        observer(.ignored(reason: "\(error)"))
                    }
                default: continue
                }
            case .transport: continue
            case .trained(let outcome, let base, let seconds):
                busy = false
                try send(try outcome.get(), base: base, seconds: seconds)
            }
            if leaving {
                if busy { continue }
                break
            }
            startIfAsked(sink: sink)
        }
        try? announce(online: false)
        observer(.finished)
        try await Task.sleep(for: .milliseconds(100))
        transport.disconnect()
    }

    /// Reads the task; true when the run is finished.
    /// The message's payload, opened and checked against the fleet key when the client is
    /// pinned to one; nil (and an ``ClientEvent/ignored(reason:)``) when it is refused.
    private func verified(_ message: MQTTMessage) -> [UInt8]? {
        guard let key = settings.fleetKey else { return message.payload }
        do {
            let envelope = try key.open(message.payload, topic: message.topic)
            var guardian = replayGuards[message.topic] ?? ReplayGuard()
            try guardian.admit(envelope.issued)
            replayGuards[message.topic] = guardian
            return envelope.payload
        } catch {
            observer(.ignored(reason: "refused \(message.topic): \(error.kind.rawValue): \(error)"))
            return nil
        }
    }

    private func take(taskPayload: [UInt8]) throws -> Bool {
        let next: FederatedTask
        do {
            next = try JSONDecoder().decode(FederatedTask.self, from: Data(taskPayload))
        } catch {
            observer(.ignored(reason: "the task is not a federated task (\(error))"))
            return false
        }
        if next.finished { return true }
        guard next != task else { return false }
        guard next.modelDigest == SHA256.hexString(layout.digest) else {
            throw FederatedError("run \(next.run) trains another model (layout \(next.modelDigest)); this client trains niid-bench's simple CNN")
        }
        guard settings.shard < next.clients else {
            throw FederatedError("shard \(settings.shard) is not one of run \(next.run)'s \(next.clients) shards (0–\(next.clients - 1))")
        }
        try next.local.validate()
        compression = try UpdateCompression(name: next.compression)
        let data = next.trainLimit.map { train.prefix($0) } ?? train
        let shards = try Partition(name: next.partition).split(labels: data.labels, parties: next.clients, seed: next.seed)
        samples = shards[settings.shard]
        guard !samples.isEmpty else { throw FederatedError("the partition left shard \(settings.shard) without samples") }
        if task != nil { feedback = ErrorFeedback() }
        task = next
        observer(.joined(task: next, examples: samples.count))
        try? announce(online: true)  // redone at the next connection if this one just dropped
        return false
    }

    private func announce(online: Bool) throws {
        let state = ClientAnnouncement(device: settings.device, shard: settings.shard, examples: samples.count, online: online, board: settings.board)
        try transport.publish(
            MQTTMessage(
                topic: Topic.federatedClient(run: settings.run, device: settings.device).path, payload: [UInt8](try JSONEncoder().encode(state)),
                qos: 1, retain: true))
    }

    /// Starts local training if the newest model asks this client for an update it has not sent.
    private func startIfAsked(sink: AsyncStream<Input>.Continuation) {
        guard !busy, let task, let model = latest else { return }
        switch task.restart {
        case .whenSelected:
            guard model.selects(settings.shard) else { return }
            if model.round == lastRound {
                // Answered already; a new coordinator process may have missed it.
                if model.boot != lastBoot, let lastFrame {
                    lastBoot = model.boot
                    publishUpdate(lastFrame, loss: lastLoss)
                    observer(.resent(round: model.round))
                }
                return
            }
        case .immediately: break
        case .onNewModel: guard model.version > lastBase else { return }
        }
        busy = true
        starts += 1
        let step = task.restart == .whenSelected ? model.round : starts
        let seed = LocalTrainer.seed(run: task.seed, client: settings.shard, step: step)
        let (samples, local, worker, observer, emulated) = (samples, task.local, worker, observer, settings.emulatedGflops)
        observer(.training(round: model.round, version: model.version))
        Task {
            let started = ContinuousClock.now
            let outcome = await worker.train(from: model.weights, samples: samples, settings: local, seed: seed) { epoch, loss in
                observer(.epoch(round: model.round, epoch: epoch, of: local.epochs, loss: loss))
            }
            if let emulated {
                let minimum = Double(samples.count * local.epochs) * worker.flopsPerSample / (emulated * 1e9)
                let remaining = minimum - (ContinuousClock.now - started).seconds
                if remaining > 0 { try? await Task.sleep(for: .seconds(remaining)) }
            }
            sink.yield(.trained(outcome, base: model, seconds: (ContinuousClock.now - started).seconds))
        }
    }

    private func send(_ result: LocalResult, base: ModelFrame, seconds: Double) throws {
        var update = ClientUpdate(client: settings.shard, examples: result.examples, delta: result.delta, baseVersion: base.version)
        if let attack = settings.attack { update.delta = attack.apply(to: update.delta, generator: &attackGenerator) }
        let frame =
            task?.errorFeedback == true && compression.isLossy
            ? try feedback.encode(update, layout: layout, compression: compression)
            : UpdateCodec.encode(update, layout: layout, compression: compression)
        publishUpdate(frame, loss: result.loss)
        lastRound = base.round
        lastBase = base.version
        lastBoot = base.boot
        lastFrame = frame
        lastLoss = result.loss
        observer(.sent(round: base.round, bytes: frame.count, seconds: seconds))
    }

    private func publishUpdate(_ frame: [UInt8], loss: Double) {
        do {
            try transport.publish(
                MQTTMessage(
                    topic: Topic.federatedUpdate(run: settings.run, device: settings.device).path, payload: frame, qos: 1,
                    userProperties: ["loss": String(loss)]))
        } catch {
            unsent = (frame, loss)
        }
    }
}

/// The board's trainer behind a lock, so that training can run on a thread of its own while
/// the client keeps reading the broker.
private final class TrainingWorker: Sendable {
    private let trainer: Mutex<LocalTrainer>
    /// Training FLOPs per sample: forward 2 per multiply-add, backward twice that.
    let flopsPerSample: Double

    init(_ trainer: sending LocalTrainer) {
        flopsPerSample = 6 * Double(trainer.network.multiplyAdds(SimpleCNN.inputShape))
        self.trainer = Mutex(trainer)
    }

    func train(
        from global: [Float], samples: [Int], settings: LocalTraining, seed: UInt64, progress: @escaping @Sendable (Int, Double) -> Void
    ) async -> Result<LocalResult, FederatedError> {
        await withCheckedContinuation { continuation in
            SystemCall.detachThread { [self] in
                let outcome = trainer.withLock { trainer -> Result<LocalResult, FederatedError> in
                    do {
                        return .success(try trainer.train(from: global, samples: samples, settings: settings, seed: seed, progress: progress))
                    } catch let error as FederatedError {
                        return .failure(error)
                    } catch {
                        return .failure(FederatedError("local training failed: \(error)"))
                    }
                }
                continuation.resume(returning: outcome)
            }
        }
    }
}
