import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveLLM

/// Shard workers on loopback ports, each serving on a thread of its own.
final class LoopbackWorkers: Sendable {
    let workers: [ShardWorker]
    let endpoints: [Endpoint]
    let directory: String

    init(_ count: Int, threads: Int = 1) throws {
        let directory = try SystemCall.makeTemporaryDirectory(prefix: "cleave-shards")
        self.directory = directory
        let listeners = try (0..<count).map { _ in try TCPSocket.listen(on: Endpoint(host: "127.0.0.1", port: 0)) }
        endpoints = listeners.map { Endpoint(host: "127.0.0.1", port: $0.localPort) }
        workers = (0..<count).map { ShardWorker(cacheDirectory: "\(directory)/worker\($0)", threads: threads) }
        for (worker, listener) in zip(workers, listeners) {
            SystemCall.detachThread { worker.serve(listener) }
        }
    }

    deinit {
        for worker in workers { worker.stop() }
    }

    var placements: [TensorParallelLlama.Placement] { endpoints.map { .worker($0) } }
}

@Suite struct ShardPlanTests {
    static let costs = try! ShardCosts(
        GGUFFile(bytes: TinyLlama.make(embedding: 256, feedForward: 256, heads: 8, kvHeads: 8).bytes),
        configuration: TinyLlama.make(embedding: 256, feedForward: 256, heads: 8, kvHeads: 8).configuration)
    static let configuration = try! TinyLlama.make(embedding: 256, feedForward: 256, heads: 8, kvHeads: 8).configuration

    @Test func sharesFollowSpeedAndCoverEverything() throws {
        let plan = try ShardPlan(
            configuration: Self.configuration, costs: Self.costs, nodes: [ShardNode(name: "a", speed: 3), ShardNode(name: "b", speed: 1)],
            contextLength: 64)
        #expect(plan.slices == [ShardSlice(kvHeads: 0..<6, feedForward: 0..<192), ShardSlice(kvHeads: 6..<8, feedForward: 192..<256)])
        let uneven = try ShardPlan(
            configuration: Self.configuration, costs: Self.costs, nodes: (0..<3).map { ShardNode(name: "n\($0)") }, contextLength: 64)
        #expect(uneven.slices.map(\.kvHeads.count) == [3, 3, 2])
        #expect(uneven.slices.map(\.feedForward.count).reduce(0, +) == 256)
        #expect(uneven.slices.allSatisfy { $0.feedForward.count % 32 == 0 })
    }

    @Test func memoryCapsAShareAndTheRestMovesToNodesWithRoom() throws {
        let small = Self.costs.bytesPerKVHead * 4 + Self.costs.cacheBytesPerKVHeadPosition * 64 * 4 + Self.costs.bytesPerFeedForwardRow * 32
        let plan = try ShardPlan(
            configuration: Self.configuration, costs: Self.costs, nodes: [ShardNode(name: "big"), ShardNode(name: "small", memoryBytes: small)],
            contextLength: 64)
        #expect(plan.slices[1].feedForward.count == 32)
        #expect(plan.weightBytes(1) + plan.cacheBytes(1) <= small)
    }

    @Test func impossiblePlansAreRefusedWithTheReason() throws {
        let nine = (0..<9).map { ShardNode(name: "n\($0)") }
        let error = try #require(throws: LLMError.self) {
            try ShardPlan(configuration: Self.configuration, costs: Self.costs, nodes: nine, contextLength: 64)
        }
        #expect(error.kind == .invalidPlan && error.description.contains("9 nodes but the model has 8 key/value heads"))
        // Not strict: a node beyond the key/value heads gets MLP rows only (2 heads, 3 blocks of rows, 3 nodes).
        let small = try TinyLlama.make()
        let loose = try ShardPlan(
            configuration: small.configuration, costs: try ShardCosts(try GGUFFile(bytes: small.bytes), configuration: small.configuration),
            nodes: (0..<3).map { ShardNode(name: "n\($0)") }, contextLength: 64, strict: false)
        #expect(loose.slices.map(\.kvHeads.count).sorted() == [0, 1, 1])
        #expect(loose.slices.map(\.feedForward.count) == [32, 32, 32])
        let tiny = try #require(throws: LLMError.self) {
            try ShardPlan(
                configuration: Self.configuration, costs: Self.costs, nodes: [ShardNode(name: "a"), ShardNode(name: "pi", memoryBytes: 1000)],
                contextLength: 64)
        }
        #expect(tiny.description.contains("node pi has 0 MiB"))
        #expect(throws: LLMError.self) {
            try ShardPlan(configuration: Self.configuration, costs: Self.costs, nodes: [ShardNode(name: "a", speed: 0)], contextLength: 64)
        }
        #expect(throws: LLMError.self) { try ShardPlan(configuration: Self.configuration, costs: Self.costs, nodes: [], contextLength: 64) }
    }
}

@Suite struct TensorParallelTests {
    /// 8 key/value heads (one per query head), 8 MLP blocks of 32 rows: room for 8 nodes.
    static let tiny = try! TinyLlama.make(
        weightType: .q8_0, layers: 3, seed: 5, embedding: 256, feedForward: 256, heads: 8, kvHeads: 8, contextLength: 128)
    static let prompts: [[Int32]] = [[3, 17, 42], [60, 1, 2, 3, 4, 5], [11], [70, 33, 33, 8, 19, 54, 20, 7]]

    static func singleNode(_ file: GGUFFile, prompt: [Int32], tokens: Int, precision: ActivationPrecision = .float) throws -> [Int32] {
        let session = LlamaSession(model: try LlamaModel(file, threads: 1, precision: precision), contextLength: 128)
        return try greedy(session, prompt: prompt, tokens: tokens)
    }

    /// Greedy continuation without stop tokens (the tiny vocabulary has no meaning).
    static func greedy(_ model: any TokenPredictor, prompt: [Int32], tokens: Int, onToken: (Int) -> Void = { _ in }) throws -> [Int32] {
        model.reset()
        var logits = try model.evaluate(prompt)
        var out: [Int32] = []
        while out.count < tokens {
            let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
            out.append(next)
            onToken(out.count)
            logits = try model.evaluate([next])
        }
        return out
    }

    static func plan(_ file: GGUFFile, speeds: [Double], strict: Bool = true) throws -> ShardPlan {
        let c = try LlamaConfiguration(file)
        return try ShardPlan(
            configuration: c, costs: try ShardCosts(file, configuration: c),
            nodes: speeds.enumerated().map { ShardNode(name: "n\($0.offset)", speed: $0.element) },
            contextLength: 128, strict: strict)
    }

    @Test func aSliceFileComputesWhatTheWindowOfTheWholeModelDoes() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let c = Self.tiny.configuration
        let slice = ShardSlice(kvHeads: 2..<5, feedForward: 64..<160)
        let sliceFile = try GGUFFile(bytes: try ShardSliceFile.bytes(of: slice, from: file, modelSHA256: "abc"))
        #expect(try ShardSliceFile.describe(sliceFile) == (slice, "abc"))
        let team = WorkerTeam(threads: 1)
        let window = try LlamaShard(file, configuration: c, slice: slice, cut: false, workers: team, batchSize: 4, precision: .q8)
        let cut = try LlamaShard(
            sliceFile, configuration: try LlamaConfiguration(sliceFile), slice: slice, cut: true, workers: team, batchSize: 4, precision: .q8)
        let input = Activations(tokens: 3, columns: c.embedding)
        input.reset(tokens: 3, columns: c.embedding)
        var random = SeededValues(state: 9)
        for i in 0..<(3 * c.embedding) { input.floats[i] = random.float(scale: 1) }
        var a = [Float](repeating: 0, count: 3 * c.embedding)
        var b = a
        let (cacheA, cacheB) = (window.makeCache(capacity: 8), cut.makeCache(capacity: 8))
        window.attention(layer: 1, input: input, first: 0, cache: cacheA, into: &a)
        cut.attention(layer: 1, input: input, first: 0, cache: cacheB, into: &b)
        #expect(a == b && a.contains { $0 != 0 })
        window.feedForward(layer: 2, input: input, into: &a)
        cut.feedForward(layer: 2, input: input, into: &b)
        #expect(a == b && a.contains { $0 != 0 })
    }

    /// With exact products (float activations) and f32 sync the only difference from one node
    /// is where partial sums are added, which moves no greedy choice.
    @Test(arguments: [[1.0, 1.0], [1.0, 2.0, 3.0, 2.0], [Double](repeating: 1, count: 8)])
    func greedyContinuationsOverWorkersEqualSingleNode(speeds: [Double]) throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(speeds.count)
        let model = try TensorParallelLlama(
            file, plan: try Self.plan(file, speeds: speeds), placements: workers.placements, encoding: .f32, threads: 1, precision: .float)
        #expect(model.plan.slices.map(\.kvHeads.count) == (speeds.count == 4 ? [1, 2, 3, 2] : model.plan.slices.map(\.kvHeads.count)))
        for prompt in Self.prompts {
            let expected = try Self.singleNode(file, prompt: prompt, tokens: 48)
            #expect(try Self.greedy(model, prompt: prompt, tokens: 48) == expected, "\(speeds.count) workers, prompt \(prompt)")
        }
        #expect(model.statistics.recoveries.isEmpty)
    }

    @Test func theCoordinatorCanHoldASliceBesideWorkers() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(2)
        let model = try TensorParallelLlama(
            file, plan: try Self.plan(file, speeds: [2, 1, 1]), placements: [.coordinator] + workers.placements, encoding: .f32, threads: 1,
            precision: .float)
        let prompt = Self.prompts[1]
        #expect(try Self.greedy(model, prompt: prompt, tokens: 40) == Self.singleNode(file, prompt: prompt, tokens: 40))
    }

    @Test func bytesPerTokenAreThePlansFormula() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let c = Self.tiny.configuration
        for encoding in SyncEncoding.allCases {
            let workers = try LoopbackWorkers(3)
            let model = try TensorParallelLlama(
                file, plan: try Self.plan(file, speeds: [1, 1, 1, 1]), placements: [.coordinator] + workers.placements, encoding: encoding,
                threads: 1)
            _ = try model.evaluate([1, 2, 3])
            let before = model.statistics.bytesSent + model.statistics.bytesReceived
            for token in [Int32(4), 5, 6, 7] { _ = try model.evaluate([token]) }
            let perToken = (model.statistics.bytesSent + model.statistics.bytesReceived - before) / 4
            // 2 syncs × layers × (N − 1) remote nodes × (request + reply: headers and 2 × embedding values).
            let formula = 2 * c.layers * 3 * (16 + 8 + 2 * encoding.byteCount(values: c.embedding))
            #expect(perToken == formula, "\(encoding)")
            #expect(perToken == ShardPlan.syncBytesPerToken(c, remoteNodes: 3, encoding: encoding))
        }
    }

    @Test func q8SyncAgreesWithSingleNodeAsMeasured() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(2)
        let model = try TensorParallelLlama(
            file, plan: try Self.plan(file, speeds: [1, 1]), placements: workers.placements, encoding: .q8_0, threads: 1)
        var identical = 0
        for prompt in Self.prompts {
            let expected = try Self.singleNode(file, prompt: prompt, tokens: 32, precision: .q8)
            let got = try Self.greedy(model, prompt: prompt, tokens: 32)
            identical += zip(expected, got).prefix { $0 == $1 }.count
        }
        // Q8_0 partials lose precision; the first tokens of every prompt still agree.
        #expect(identical >= Self.prompts.count * 4, "\(identical) of \(Self.prompts.count * 32) leading tokens agree")
    }

    @Test func aWorkerLostMidGenerationLeavesTheAnswerUnchanged() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(3)
        let model = try TensorParallelLlama(
            file, plan: try Self.plan(file, speeds: [1, 1, 1]), placements: workers.placements, encoding: .f32, threads: 1,
            precision: .float, timeout: 30)
        let prompt = Self.prompts[3]
        let expected = try Self.singleNode(file, prompt: prompt, tokens: 64)
        let got = try Self.greedy(model, prompt: prompt, tokens: 64) { count in
            if count == 20 { workers.workers[1].stop() }
        }
        #expect(got == expected)
        #expect(model.statistics.recoveries.count == 1)
        #expect(model.placements[1] == .coordinator && model.placements[0] != .coordinator)
    }

    @Test func badSessionsAreRefusedWithTheReason() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(1)
        let slice = ShardSlice(kvHeads: 0..<8, feedForward: 0..<256)
        let bytes = try ShardSliceFile.bytes(of: slice, from: file, modelSHA256: ShardSliceFile.digest(of: file))
        let digest = SHA256.hexString(SHA256.hash(bytes))
        func open(model: String, sha: String, slice: ShardSlice = slice, sending payload: [UInt8]) throws {
            _ = try RemoteShard(
                endpoint: workers.endpoints[0], slice: slice, modelSHA256: model, sliceSHA256: sha, sliceBytes: payload.count, capacity: 64,
                precision: .q8, timeout: 30, sliceFile: { payload })
        }
        var corrupt = bytes
        corrupt[corrupt.count - 1] ^= 1
        let corruptError = try #require(throws: LLMError.self) { try open(model: ShardSliceFile.digest(of: file), sha: digest, sending: corrupt) }
        #expect(corruptError.description.contains("corrupt, not stored"))
        let otherModel = try #require(throws: LLMError.self) { try open(model: String(repeating: "ab", count: 32), sha: digest, sending: bytes) }
        #expect(otherModel.description.contains("cut from model"))
        let otherSlice = try #require(throws: LLMError.self) {
            try open(model: ShardSliceFile.digest(of: file), sha: digest, slice: ShardSlice(kvHeads: 0..<4, feedForward: 0..<256), sending: bytes)
        }
        #expect(otherSlice.description.contains("the coordinator asked for"))
        // Nothing is wedged: a good session still opens.
        try open(model: ShardSliceFile.digest(of: file), sha: digest, sending: bytes)
        // Nobody listening: a clear error, not a hang.
        let gone = try #require(throws: LLMError.self) {
            _ = try RemoteShard(
                endpoint: Endpoint(host: "127.0.0.1", port: 1), slice: slice, modelSHA256: "", sliceSHA256: "", sliceBytes: 0, capacity: 64,
                precision: .q8, timeout: 30, sliceFile: { [] })
        }
        #expect(gone.description.contains("cannot reach worker 127.0.0.1:1"))
    }

    @Test func aRequestOverTheContextIsRefused() throws {
        let file = try GGUFFile(bytes: Self.tiny.bytes)
        let workers = try LoopbackWorkers(2)
        let model = try TensorParallelLlama(file, plan: try Self.plan(file, speeds: [1, 1]), placements: workers.placements, threads: 1)
        let error = try #require(throws: LLMError.self) { try model.evaluate([Int32](repeating: 1, count: 129)) }
        #expect(error.kind == .contextFull)
        _ = try model.evaluate([1, 2])
    }
}
