import CleaveSupport
import CleaveTensor

/// A Llama model run with tensor parallelism: the coordinator keeps the trunk (embedding,
/// norms, output head, residual stream) and sends each block's normed input to the nodes of
/// a ``ShardPlan``, which return their slice's partial output; the partials are summed in
/// node order (a star all-reduce through the coordinator: two hops whatever the node count)
/// and added to the residual, as the single-node model adds its one shard's output.
///
/// Follow one token: embedding row → for each block: RMSNorm → broadcast to every node
/// holding attention → each computes Q/K/V of its heads, stores its keys and values, attends,
/// projects with its columns of the output matrix → partials back, summed, added; RMSNorm →
/// broadcast → gate/up rows, SwiGLU, down columns → partials summed, added → final norm and
/// head → logits.
///
/// A node is the coordinator itself (its slice read in place from the model file) or a
/// worker (``ShardWorker``) at `HOST:PORT`. When a worker fails (closes, errors, or is silent
/// past the timeout), its slice moves to the coordinator, the other workers are reconnected,
/// every cache is rebuilt by replaying the passes so far exactly as they ran, and the pass
/// that failed runs again: the answer is the one an uninterrupted run gives.
public final class TensorParallelLlama {
    /// Where a plan's node runs.
    public enum Placement: Sendable, Equatable, CustomStringConvertible {
        case coordinator
        case worker(Endpoint)

        public var description: String {
            switch self {
            case .coordinator: "coordinator"
            case .worker(let endpoint): endpoint.description
            }
        }
    }

    /// Counters of the data plane since the model was made.
    public struct Statistics: Sendable {
        /// All-reduces run (two per block per pass).
        public var syncs = 0
        public var bytesSent = 0
        public var bytesReceived = 0
        /// Seconds the coordinator spent encoding, sending and waiting for workers' partials
        /// (beyond its own slice's compute).
        public var syncSeconds = 0.0
        /// Seconds the coordinator spent computing its own slices.
        public var localSeconds = 0.0
        /// One line per worker lost: which, why, and the seconds until the failed pass was done again.
        public var recoveries: [String] = []
        public var stallSeconds: [Double] = []
    }

    public let configuration: LlamaConfiguration
    public let file: GGUFFile
    public let plan: ShardPlan
    public private(set) var placements: [Placement]
    public let encoding: SyncEncoding
    public let batchSize: Int
    public let precision: ActivationPrecision
    public let workers: WorkerTeam
    /// Positions the caches hold.
    public let capacity: Int
    public private(set) var statistics = Statistics()
    /// Positions evaluated so far.
    public private(set) var position = 0

    private let trunk: LlamaTrunk
    private let modelSHA256: String
    private let timeout: Double
    private let log: (String) -> Void
    private var members: [Member]
    /// Every pass since the last reset, to rebuild the caches the same way.
    private var passes: [[Int32]] = []
    /// One partial output buffer per node (batch × embedding).
    private let partials: [UnsafeMutablePointer<Float>]
    /// The block input as a worker receives it, for the coordinator's own slices (so that a
    /// slice computes the same wherever it runs), and scratch bytes for that rounding.
    private let roundedInput: Activations
    private var roundingScratch: [UInt8] = []

    private enum Member {
        case local(LlamaShard, KVCache)
        case remote(RemoteShard)
    }

    /// A worker that failed in the middle of a pass.
    private struct MemberFailure: Error {
        let index: Int
        let error: Error
    }

    /// Opens a session with every worker of `placements` (one per plan node), sending each
    /// its slice file when it does not have it.
    ///
    /// - Parameters:
    ///   - modelSHA256: the model file's digest (computed when nil).
    ///   - timeout: seconds a worker may take to answer one request before it counts as lost.
    /// - Throws: ``LLMError`` when a worker cannot be reached or refuses its slice, with its reason.
    public init(
        _ file: GGUFFile, plan: ShardPlan, placements: [Placement], encoding: SyncEncoding = .q8_0, modelSHA256: String? = nil,
        threads: Int? = nil, batchSize: Int = 64, precision: ActivationPrecision = .q8, timeout: Double = 30,
        log: @escaping (String) -> Void = { _ in }
    ) throws {
        guard placements.count == plan.slices.count else {
            throw LLMError(.invalidPlan, "\(placements.count) places for a plan of \(plan.slices.count) nodes")
        }
        let c = try LlamaConfiguration(file)
        guard c == plan.configuration else { throw LLMError(.invalidPlan, "the plan was made for another model") }
        guard c.embedding % 32 == 0 else { throw LLMError(.invalidPlan, "embedding \(c.embedding) is not a multiple of 32") }
        configuration = c
        self.file = file
        self.plan = plan
        self.placements = placements
        self.encoding = encoding
        self.batchSize = max(1, batchSize)
        self.precision = precision
        self.timeout = timeout
        self.log = log
        capacity = plan.contextLength
        workers = WorkerTeam(threads: threads)
        trunk = try LlamaTrunk(file, configuration: c, batchSize: self.batchSize)
        self.modelSHA256 = modelSHA256 ?? ShardSliceFile.digest(of: file)
        partials = plan.slices.map { _ in .allocate(capacity: max(1, batchSize) * c.embedding) }
        roundedInput = Activations(tokens: max(1, batchSize), columns: c.embedding)
        members = []
        for index in plan.slices.indices { members.append(try connect(index)) }
    }

    deinit {
        for buffer in partials { buffer.deallocate() }
    }

    /// Forgets every position (a new conversation).
    public func reset() {
        position = 0
        passes = []
        for case .local(_, let cache) in members { cache.reset() }
    }

    /// Runs `tokens` after the positions already evaluated and returns the logits of the last.
    ///
    /// - Throws: ``LLMError`` for a token out of range or a full context; a worker's failure
    ///   is not thrown but recovered from (see the type's documentation).
    public func evaluate(_ tokens: [Int32]) throws -> [Float] {
        try evaluate(tokens, everyPosition: false)[0]
    }

    /// Like ``evaluate(_:)``, but with `everyPosition` returns the logits after each token.
    public func evaluate(_ tokens: [Int32], everyPosition: Bool) throws -> [[Float]] {
        try trunk.validate(tokens, position: position, capacity: capacity)
        var logits: [[Float]] = []
        var start = 0
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + batchSize, tokens.count)])
            do {
                try pass(chunk, first: position)
            } catch let failure as MemberFailure {
                try recover(from: failure, retrying: chunk)
            }
            passes.append(chunk)
            position += chunk.count
            start += chunk.count
            if everyPosition { logits += trunk.logits(rows: 0..<chunk.count, workers: workers, precision: precision) }
        }
        return everyPosition ? logits : [trunk.logitsOfLastToken(workers: workers, precision: precision)]
    }

    // MARK: - One pass

    private func pass(_ chunk: [Int32], first: Int) throws {
        try trunk.forward(
            chunk, workers: workers,
            attention: { layer, normed, out in try allReduce(.attention, layer: layer, normed, first: first, into: out) },
            feedForward: { layer, normed, out in try allReduce(.feedForward, layer: layer, normed, first: first, into: out) })
        for case .local(_, let cache) in members { cache.advance(by: chunk.count) }
    }

    /// Block `layer`'s attention or MLP on every node that holds a part of it, summed into `out`.
    private func allReduce(_ operation: ShardWire.Operation, layer: Int, _ normed: Activations, first: Int, into out: UnsafeMutablePointer<Float>)
        throws
    {
        let n = normed.tokens
        let count = n * configuration.embedding
        let clock = ContinuousClock()
        let taking = plan.slices.indices.filter {
            operation == .attention ? !plan.slices[$0].kvHeads.isEmpty : !plan.slices[$0].feedForward.isEmpty
        }
        var syncTime = Duration.zero
        var started = clock.now
        for index in taking {
            guard case .remote(let remote) = members[index] else { continue }
            do {
                try remote.start(
                    operation, layer: layer, first: first, input: normed.floats, tokens: n, width: configuration.embedding, encoding: encoding)
            } catch { throw MemberFailure(index: index, error: error) }
        }
        syncTime += clock.now - started
        started = clock.now
        // The coordinator's own slices see the input and give their partial rounded as the
        // link would round them: the sum does not depend on where a slice runs, so a slice
        // taken over from a lost worker changes nothing.
        var input = normed
        if encoding != .f32 && taking.contains(where: { if case .local = members[$0] { true } else { false } }) {
            roundedInput.reset(tokens: n, columns: configuration.embedding)
            roundedInput.floats.update(from: normed.floats, count: count)
            encoding.roundTrip(roundedInput.floats, count: count, scratch: &roundingScratch)
            input = roundedInput
        }
        for index in taking {
            guard case .local(let shard, let cache) = members[index] else { continue }
            if operation == .attention {
                shard.attention(layer: layer, input: input, first: first, cache: cache, into: partials[index])
            } else {
                shard.feedForward(layer: layer, input: input, into: partials[index])
            }
            encoding.roundTrip(partials[index], count: count, scratch: &roundingScratch)
        }
        statistics.localSeconds += (clock.now - started).seconds
        started = clock.now
        for index in taking {
            guard case .remote(let remote) = members[index] else { continue }
            do {
                try remote.finish(into: partials[index], count: count, encoding: encoding)
            } catch { throw MemberFailure(index: index, error: error) }
        }
        syncTime += clock.now - started
        statistics.syncSeconds += syncTime.seconds
        statistics.syncs += 1
        // The star's sum, in node order so that every run adds the same way.
        if let firstIndex = taking.first {
            out.update(from: partials[firstIndex], count: count)
            for index in taking.dropFirst() { Elementwise.add(partials[index], into: out, count: count) }
        } else {
            out.update(repeating: 0, count: count)
        }
        refreshByteCounts()
    }

    private func refreshByteCounts() {
        var (sent, received) = (0, 0)
        for case .remote(let remote) in members {
            sent += remote.bytesSent
            received += remote.bytesReceived
        }
        statistics.bytesSent = retiredBytes.sent + sent
        statistics.bytesReceived = retiredBytes.received + received
    }

    /// Digest and size of each slice file made so far (a reconnect does not cut it again).
    private var sliceDigests: [ShardSlice: (sha256: String, bytes: Int)] = [:]

    /// Bytes counted by connections that were closed (after a failure).
    private var retiredBytes = (sent: 0, received: 0)

    // MARK: - Nodes and recovery

    /// The member for plan node `index` at its placement.
    private func connect(_ index: Int) throws -> Member {
        let slice = plan.slices[index]
        switch placements[index] {
        case .coordinator:
            return try localMember(slice)
        case .worker(let endpoint):
            let digest: (sha256: String, bytes: Int)
            var cut: [UInt8]?
            if let known = sliceDigests[slice] {
                digest = known
            } else {
                let bytes = try ShardSliceFile.bytes(of: slice, from: file, modelSHA256: modelSHA256)
                digest = (SHA256.hexString(SHA256.hash(bytes)), bytes.count)
                sliceDigests[slice] = digest
                cut = bytes
            }
            let remote = try RemoteShard(
                endpoint: endpoint, slice: slice, modelSHA256: modelSHA256, sliceSHA256: digest.sha256, sliceBytes: digest.bytes,
                capacity: capacity, precision: precision, timeout: timeout,
                sliceFile: { try cut ?? ShardSliceFile.bytes(of: slice, from: file, modelSHA256: modelSHA256) })
            log("node \(index) at \(endpoint): \(slice)")
            return .remote(remote)
        }
    }

    private func localMember(_ slice: ShardSlice) throws -> Member {
        let shard = try LlamaShard(
            file, configuration: configuration, slice: slice, cut: false, workers: workers, batchSize: batchSize, precision: precision)
        return .local(shard, shard.makeCache(capacity: capacity))
    }

    /// Moves the failed node's slice to the coordinator, reopens the other workers, replays
    /// every pass so far, and runs the failed pass again.
    private func recover(from failure: MemberFailure, retrying chunk: [Int32]) throws {
        let clock = ContinuousClock()
        let started = clock.now
        var failure: MemberFailure? = failure
        while let current = failure {
            log("node \(current.index) at \(placements[current.index]) failed: \(current.error); its slice moves to the coordinator")
            statistics.recoveries.append("node \(current.index) (\(placements[current.index])): \(current.error)")
            placements[current.index] = .coordinator
            // Every remote session may be in the middle of the failed request: start them afresh.
            for case .remote(let remote) in members {
                retiredBytes.sent += remote.bytesSent
                retiredBytes.received += remote.bytesReceived
            }
            members = []
            for index in plan.slices.indices {
                do {
                    members.append(try connect(index))
                } catch {
                    log("node \(index) at \(placements[index]) cannot be reopened (\(error)); its slice moves to the coordinator")
                    placements[index] = .coordinator
                    members.append(try localMember(plan.slices[index]))
                }
            }
            do {
                var first = 0
                for replayed in passes {
                    try pass(replayed, first: first)
                    first += replayed.count
                }
                try pass(chunk, first: first)
                failure = nil
            } catch let again as MemberFailure {
                failure = again
            }
        }
        statistics.stallSeconds.append((clock.now - started).seconds)
    }
}
