/// What one node offers a tensor-parallel plan.
public struct ShardNode: Sendable, Equatable, Codable {
    /// How the node is called in plans and logs (a device id, `HOST:PORT`, `coordinator`).
    public var name: String
    /// Relative speed (any unit: multiply-adds per second, tokens per second); shares are
    /// proportional to it.
    public var speed: Double
    /// Bytes the node can give its slice's weights and KV cache; nil: no limit.
    public var memoryBytes: Int?

    public init(name: String, speed: Double = 1, memoryBytes: Int? = nil) {
        self.name = name
        self.speed = speed
        self.memoryBytes = memoryBytes
    }
}

/// What each part of a model costs a node that holds it, read off the file's tensors.
public struct ShardCosts: Sendable, Equatable {
    /// Weight bytes of one key/value head's group (its query heads, key, value, and the
    /// output projection's columns), over all blocks.
    public var bytesPerKVHead: Int
    /// Weight bytes of one MLP row (gate and up rows, the down projection's column), over all blocks.
    public var bytesPerFeedForwardRow: Int
    /// KV-cache bytes of one key/value head per position (float16 keys and values, all blocks).
    public var cacheBytesPerKVHeadPosition: Int
    /// MLP rows are split in multiples of this: the largest block size of the MLP tensors
    /// (32 for Q4/Q8, 256 for K-quants), so that every slice is whole blocks.
    public var feedForwardGranularity: Int

    /// The costs of `file`'s model.
    public init(_ file: GGUFFile, configuration c: LlamaConfiguration) throws {
        func type(_ name: String) throws -> GGMLType {
            guard let info = file.tensor(named: "blk.0.\(name).weight") else {
                throw GGUFError(.missingTensor, "the model has no tensor 'blk.0.\(name).weight'")
            }
            return info.type
        }
        func rowBytes(_ name: String, columns: Int) throws -> Int {
            let t = try type(name)
            guard let bytes = t.byteCount(elements: columns) else {
                throw GGUFError(.malformed, "blk.0.\(name).weight: \(columns) columns are not whole \(t) blocks")
            }
            return bytes
        }
        let d = c.headDimension
        let group = c.heads / c.kvHeads
        let attention =
            try group * d * rowBytes("attn_q", columns: c.embedding) + d * rowBytes("attn_k", columns: c.embedding) + d
            * rowBytes("attn_v", columns: c.embedding) + c.embedding * rowBytes("attn_output", columns: group * d)
        let granularity = try ["ffn_gate", "ffn_up", "ffn_down"].map { try type($0).blockSize }.max() ?? 32
        let mlp =
            try (rowBytes("ffn_gate", columns: c.embedding) + rowBytes("ffn_up", columns: c.embedding)) * granularity + c.embedding
            * rowBytes("ffn_down", columns: granularity)
        bytesPerKVHead = attention * c.layers
        bytesPerFeedForwardRow = mlp * c.layers / granularity
        cacheBytesPerKVHeadPosition = c.layers * 2 * d * MemoryLayout<Float16>.size
        feedForwardGranularity = max(32, granularity)
    }
}

/// How a model's blocks are split over nodes: one ``ShardSlice`` per node, in node order,
/// the key/value heads and the MLP rows each cut into consecutive runs.
///
/// Attention is split in whole key/value-head groups (grouped-query attention shares a
/// key/value head among its query heads, so a group cannot be cut), the MLP in runs of
/// ``ShardCosts/feedForwardGranularity`` rows. Both are apportioned by speed (largest
/// remainder), uneven where the nodes or the head count are, then capped by each node's
/// memory, the excess going to nodes that have room.
public struct ShardPlan: Sendable, Equatable {
    public let configuration: LlamaConfiguration
    public let nodes: [ShardNode]
    public let slices: [ShardSlice]
    public let costs: ShardCosts
    /// Positions of KV cache each node reserves.
    public let contextLength: Int

    /// Plans `configuration` over `nodes`.
    ///
    /// - Parameter strict: every node must hold attention (at least one key/value head), so
    ///   more nodes than key/value heads is refused; otherwise extra nodes do only MLP rows.
    /// - Throws: ``LLMError`` `invalidPlan` naming the reason: no nodes, a speed that is not
    ///   positive, more nodes than key/value heads in strict mode, a node too small for its
    ///   attention share or for any slice, or all the nodes' memory together too small.
    public init(
        configuration c: LlamaConfiguration, costs: ShardCosts, nodes: [ShardNode], contextLength: Int, strict: Bool = true
    ) throws {
        guard !nodes.isEmpty else { throw LLMError(.invalidPlan, "a plan needs at least one node") }
        if let bad = nodes.first(where: { !($0.speed > 0) || !$0.speed.isFinite }) {
            throw LLMError(.invalidPlan, "node \(bad.name) has speed \(bad.speed); speeds must be positive")
        }
        if strict && nodes.count > c.kvHeads {
            throw LLMError(
                .invalidPlan,
                "\(nodes.count) nodes but the model has \(c.kvHeads) key/value heads: in strict mode every node holds at least one "
                    + "(use fewer nodes, or non-strict mode to give the extra nodes MLP rows only)")
        }
        let speeds = nodes.map(\.speed)
        let heads = Self.apportion(c.kvHeads, by: speeds, atLeastOne: strict)
        // Memory left for MLP rows once a node holds its attention share and that share's cache.
        let headBytes = costs.bytesPerKVHead + costs.cacheBytesPerKVHeadPosition * contextLength
        var rowCapacity: [Int] = []
        for (node, count) in zip(nodes, heads) {
            guard let memory = node.memoryBytes else {
                rowCapacity.append(Int.max)
                continue
            }
            let left = memory - count * headBytes
            guard left >= 0 else {
                throw LLMError(
                    .invalidPlan,
                    "node \(node.name) has \(memory / 1_048_576) MiB, its \(count) key/value head(s) need \(count * headBytes / 1_048_576) MiB "
                        + "(weights and a \(contextLength)-position cache)")
            }
            rowCapacity.append(left / max(1, costs.bytesPerFeedForwardRow * costs.feedForwardGranularity))
        }
        let units = c.feedForward / costs.feedForwardGranularity
        guard c.feedForward % costs.feedForwardGranularity == 0 else {
            throw LLMError(.invalidPlan, "the MLP's \(c.feedForward) rows are not whole blocks of \(costs.feedForwardGranularity)")
        }
        let rows = try Self.apportion(units, by: speeds, capacities: rowCapacity, names: nodes.map(\.name))
        var slices: [ShardSlice] = []
        var (head, row) = (0, 0)
        for (count, unitCount) in zip(heads, rows) {
            let ffRows = unitCount * costs.feedForwardGranularity
            slices.append(ShardSlice(kvHeads: head..<(head + count), feedForward: row..<(row + ffRows)))
            head += count
            row += ffRows
        }
        if let idle = zip(nodes, slices).first(where: { $0.1.kvHeads.isEmpty && $0.1.feedForward.isEmpty }) {
            throw LLMError(.invalidPlan, "node \(idle.0.name) would get no slice at all (too slow or too small for one MLP block)")
        }
        configuration = c
        self.nodes = nodes
        self.slices = slices
        self.costs = costs
        self.contextLength = contextLength
    }

    /// Weight bytes of node `index`'s slice.
    public func weightBytes(_ index: Int) -> Int {
        slices[index].kvHeads.count * costs.bytesPerKVHead + slices[index].feedForward.count * costs.bytesPerFeedForwardRow
    }

    /// KV-cache bytes node `index` reserves for ``contextLength`` positions.
    public func cacheBytes(_ index: Int) -> Int { slices[index].kvHeads.count * costs.cacheBytesPerKVHeadPosition * contextLength }

    /// Bytes on the wire per decoded token when `remoteNodes` workers each hold attention and
    /// MLP: 2 syncs × layers × remote nodes × (a 16-byte request and 8-byte reply header, the
    /// block's input out and the partial back, embedding values each).
    public static func syncBytesPerToken(_ c: LlamaConfiguration, remoteNodes: Int, encoding: SyncEncoding) -> Int {
        2 * c.layers * remoteNodes * ShardWire.syncBytes(tokens: 1, embedding: c.embedding, encoding: encoding)
    }

    /// Bytes on the wire per decoded token of this plan when the nodes at `remote` are workers
    /// (a node takes part only in the syncs of the parts it holds).
    public func syncBytesPerToken(remote: [Int], encoding: SyncEncoding) -> Int {
        let syncs = remote.reduce(0) { total, index in
            total + (slices[index].kvHeads.isEmpty ? 0 : 1) + (slices[index].feedForward.isEmpty ? 0 : 1)
        }
        return configuration.layers * syncs * ShardWire.syncBytes(tokens: 1, embedding: configuration.embedding, encoding: encoding)
    }

    // MARK: - Apportioning

    /// `total` whole units shared in proportion to `weights` by largest remainder (Hamilton's
    /// method); with `atLeastOne` a node left with none takes one from the node with the most
    /// units per weight (needs `total ≥ weights.count`).
    static func apportion(_ total: Int, by weights: [Double], atLeastOne: Bool = false) -> [Int] {
        let sum = weights.reduce(0, +)
        let exact = weights.map { Double(total) * $0 / sum }
        var shares = exact.map { Int($0.rounded(.down)) }
        var left = total - shares.reduce(0, +)
        let byRemainder = exact.indices.sorted { exact[$0] - exact[$0].rounded(.down) > exact[$1] - exact[$1].rounded(.down) }
        for index in byRemainder where left > 0 {
            shares[index] += 1
            left -= 1
        }
        while atLeastOne, let empty = shares.firstIndex(of: 0) {
            let donor = shares.indices.filter { shares[$0] > 1 }.max { Double(shares[$0]) / weights[$0] < Double(shares[$1]) / weights[$1] }
            guard let donor else { break }
            shares[donor] -= 1
            shares[empty] = 1
        }
        return shares
    }

    /// `total` units in proportion to `weights`, no share above its capacity: shares that
    /// reach their capacity are fixed there and the rest is shared again among the others.
    static func apportion(_ total: Int, by weights: [Double], capacities: [Int], names: [String]) throws -> [Int] {
        let room = capacities.reduce(0) { $0 &+ min($1, total) }
        guard room >= total else {
            throw LLMError(
                .invalidPlan,
                "the nodes' memory holds \(room) of the MLP's \(total) blocks of rows: add a node or give them more memory (\(names.joined(separator: ", ")))"
            )
        }
        var shares = [Int](repeating: 0, count: weights.count)
        var open = Set(weights.indices)
        var left = total
        while left > 0 {
            let indices = open.sorted()
            let trial = apportion(left, by: indices.map { weights[$0] })
            var capped = false
            for (index, share) in zip(indices, trial) where shares[index] + share > capacities[index] {
                left -= capacities[index] - shares[index]
                shares[index] = capacities[index]
                open.remove(index)
                capped = true
            }
            if !capped {
                for (index, share) in zip(indices, trial) { shares[index] += share }
                left = 0
            }
        }
        return shares
    }
}
