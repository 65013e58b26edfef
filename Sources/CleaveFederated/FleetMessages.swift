import CleaveCodec
import CleaveDatasets
import CleaveSupport

/// What the clients of a federated run over MQTT train, and how: the coordinator publishes
/// it retained on `cleave/v1/fl/RUN/task`, and a client that joins later reads it first.
public struct FederatedTask: Codable, Sendable, Equatable {
    /// When an asynchronous client starts its next update.
    public enum Restart: String, Codable, Sendable {
        /// Only when the coordinator asks (synchronous rounds: the client is in the round's selection).
        case whenSelected = "when-selected"
        /// At once, from the newest global model it has (FedAsync, FedBuff).
        case immediately
        /// When a newer global model than its last update's base arrives (FedFix: the next interval).
        case onNewModel = "on-new-model"
    }

    public var run: String
    /// The strategy, for logs (the clients need only ``restart`` and ``proximalMu``).
    public var strategy: String
    public var clients: Int
    /// `labels:α`, `quantity:α` or `iid`: how the training set is split into the clients' shards.
    public var partition: String
    public var seed: UInt64
    public var epochs: Int
    public var batchSize: Int
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public var proximalMu: Float
    /// An ``UpdateCompression`` name.
    public var compression: String
    public var errorFeedback: Bool
    public var restart: Restart
    /// The model's layout digest in hex: a client of another architecture refuses the run.
    public var modelDigest: String
    /// Clients use only the first N training images (quick runs); nil: all of them.
    public var trainLimit: Int?
    /// Set when the run is over: clients leave.
    public var finished = false

    public init(
        run: String, strategy: StrategyChoice, clients: Int, partition: Partition, seed: UInt64, local: LocalTraining,
        compression: UpdateCompression, errorFeedback: Bool, layout: WeightLayout, trainLimit: Int?
    ) {
        self.run = run
        self.strategy = strategy.description
        self.clients = clients
        self.partition = partition.name
        self.seed = seed
        epochs = local.epochs
        batchSize = local.batchSize
        learningRate = local.learningRate
        momentum = local.momentum
        weightDecay = local.weightDecay
        proximalMu = strategy.proximalMu
        self.compression = compression.description
        self.errorFeedback = errorFeedback
        switch strategy {
        case .fedFix: restart = .onNewModel
        case .fedAsync, .fedBuff: restart = .immediately
        default: restart = .whenSelected
        }
        modelDigest = SHA256.hexString(layout.digest)
        self.trainLimit = trainLimit
    }

    /// The local training settings the task names.
    public var local: LocalTraining {
        LocalTraining(
            epochs: epochs, batchSize: batchSize, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay,
            proximalMu: proximalMu)
    }
}

/// A federated client's retained state on `cleave/v1/fl/RUN/clients/DEVICE` (its will
/// publishes the same with `online` false).
public struct ClientAnnouncement: Codable, Sendable, Equatable {
    public var device: String
    /// Its shard of the partition (the client index in update frames).
    public var shard: Int
    /// Training examples it holds (the data share FedAvg and FedFix weigh it by).
    public var examples: Int
    public var online: Bool
    /// The device profile it runs on, for logs.
    public var board: String

    public init(device: String, shard: Int, examples: Int, online: Bool, board: String) {
        self.device = device
        self.shard = shard
        self.examples = examples
        self.online = online
        self.board = board
    }
}

extension Partition {
    /// The name a task carries: `labels:α`, `quantity:α` or `iid`.
    public var name: String {
        switch self {
        case .iid: "iid"
        case .dirichletLabels(let alpha): "labels:\(alpha)"
        case .dirichletQuantity(let alpha): "quantity:\(alpha)"
        }
    }

    /// Parses ``name``.
    public init(name: String) throws {
        let parts = name.split(separator: ":", maxSplits: 1).map(String.init)
        switch (parts.first ?? "", parts.count == 2 ? Double(parts[1]) : nil) {
        case ("iid", nil) where parts.count == 1: self = .iid
        case ("labels", let alpha?) where alpha > 0: self = .dirichletLabels(alpha: alpha)
        case ("quantity", let alpha?) where alpha > 0: self = .dirichletQuantity(alpha: alpha)
        default: throw FederatedError("unknown partition '\(name)': expected iid, labels:α or quantity:α with α > 0")
        }
    }
}

/// The global model as the coordinator publishes it (retained, so that a client that
/// connects late or reconnects starts from the newest): its weights in float32, its
/// version, the round it opens and the clients asked to train on it, with a CRC-32C
/// (layout in `docs/wire-format.md`, "Model frame").
///
/// Integrity only: the frame is not signed yet (signing comes with the fleet keys of the
/// hardening issue).
public struct ModelFrame: Sendable, Equatable {
    static let magic: UInt8 = 0xFC
    static let formatVersion: UInt8 = 1

    /// Aggregations that made this model (0: the initial one).
    public var version: Int
    /// The synchronous round it opens (for asynchronous runs, equal to `version + 1`).
    public var round: Int
    /// Shards asked to train on it; nil: every client (asynchronous runs).
    public var selected: [Int]?
    /// A random number of the coordinator process that published it: a client that sees the
    /// same round from a new coordinator process sends its update again (it may have been lost).
    public var boot: UInt64
    public var weights: [Float]

    public init(version: Int, round: Int, selected: [Int]?, boot: UInt64, weights: [Float]) {
        self.version = version
        self.round = round
        self.selected = selected
        self.boot = boot
        self.weights = weights
    }

    /// Whether the client of shard `shard` is asked to train on this model.
    public func selects(_ shard: Int) -> Bool { selected?.contains(shard) ?? true }

    public func encode(layout: WeightLayout) -> [UInt8] {
        precondition(weights.count == layout.count, "a model frame carries its own model's weights")
        var writer = ByteWriter(capacity: 32 + 4 * weights.count)
        writer.u8(Self.magic)
        writer.u8(Self.formatVersion)
        writer.u8(selected == nil ? 1 : 0)
        writer.append(contentsOf: layout.digest)
        writer.integer(boot)
        writer.varint(UInt64(version))
        writer.varint(UInt64(round))
        if let selected {
            writer.varint(UInt64(selected.count))
            for shard in selected { writer.varint(UInt64(shard)) }
        }
        for value in weights { writer.float32(value) }
        writer.integer(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// Decodes a frame for the model `layout`.
    ///
    /// - Throws: ``FederatedError`` naming what is wrong: truncation, checksum, another model,
    ///   an unknown version or flag, a count out of range, a non-finite weight.
    public static func decode(_ bytes: [UInt8], layout: WeightLayout) throws -> ModelFrame {
        guard bytes.count >= 3 + 8 + 8 + 2 + 4 else { throw FederatedError("a model frame of \(bytes.count) bytes is truncated") }
        var trailer = ByteReader(bytes)
        try? trailer.skip(bytes.count - 4)
        guard let stored = try? trailer.integer(UInt32.self), CRC32C.checksum(bytes[..<(bytes.count - 4)]) == stored else {
            throw FederatedError("the model frame's checksum does not match")
        }
        var reader = ByteReader(bytes, end: bytes.count - 4)
        do {
            guard try reader.integer(UInt8.self) == magic else { throw FederatedError("not a model frame (bad magic byte)") }
            let version = try reader.integer(UInt8.self)
            guard version == formatVersion else { throw FederatedError("model frame version \(version) is not supported") }
            let flags = try reader.integer(UInt8.self)
            guard flags & ~1 == 0 else { throw FederatedError("unknown model frame flags 0x\(String(flags, radix: 16))") }
            guard Array(try reader.take(8)) == layout.digest else {
                throw FederatedError("the model frame is of another model (its layout digest differs from this client's)")
            }
            let boot = try reader.integer(UInt64.self)
            let modelVersion = try reader.varint()
            let round = try reader.varint()
            guard modelVersion < 1 << 40, round < 1 << 40 else { throw FederatedError("the model frame's version or round is out of range") }
            var selected: [Int]?
            if flags & 1 == 0 {
                let count = try reader.varint()
                guard count <= 1 << 20, count <= UInt64(reader.end - reader.offset) else {
                    throw FederatedError("the model frame selects \(count) clients, more than it can hold")
                }
                selected = try (0..<Int(count)).map { _ in
                    let shard = try reader.varint()
                    guard shard < 1 << 31 else { throw FederatedError("the model frame selects client \(shard), out of range") }
                    return Int(shard)
                }
            }
            guard reader.end - reader.offset == 4 * layout.count else {
                throw FederatedError("the model frame holds \(reader.end - reader.offset) bytes of weights; the model needs \(4 * layout.count)")
            }
            var weights = [Float]()
            weights.reserveCapacity(layout.count)
            for _ in 0..<layout.count {
                let value = try reader.float32()
                guard value.isFinite else { throw FederatedError("the model frame holds a non-finite weight") }
                weights.append(value)
            }
            return ModelFrame(version: Int(modelVersion), round: Int(round), selected: selected, boot: boot, weights: weights)
        } catch let error as ByteReadError {
            throw FederatedError("the model frame is truncated (\(error))")
        }
    }
}
