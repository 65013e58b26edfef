/// What one board sends back after local training: how far its model moved from the
/// global model it started from, and on how many examples.
public struct ClientUpdate: Sendable, Equatable {
    /// The board's index in the run (0-based).
    public var client: Int
    /// Number of local training examples (FedAvg's weight).
    public var examples: Int
    /// The client's model minus the global model it started from, laid out as the run's ``WeightLayout``.
    public var delta: [Float]
    /// The version (aggregation count) of the global model the client started from.
    public var baseVersion: Int

    public init(client: Int, examples: Int, delta: [Float], baseVersion: Int) {
        self.client = client
        self.examples = examples
        self.delta = delta
        self.baseVersion = baseVersion
    }

    /// Refuses an update that cannot be aggregated into a model of `modelSize` values: another
    /// size, no examples, or a value that is not finite (NaN or ±∞ would poison every average).
    public func validate(modelSize: Int) throws {
        guard delta.count == modelSize else { throw FederatedError("client \(client) sent \(delta.count) values for a model of \(modelSize)") }
        guard examples > 0 else { throw FederatedError("client \(client) reports \(examples) training examples") }
        if let index = delta.firstIndex(where: { !$0.isFinite }) {
            throw FederatedError("client \(client) sent a non-finite value (\(delta[index])) at position \(index)")
        }
    }
}

/// A synchronous aggregation rule: the updates of one round in, the next global model out.
///
/// Rules are written on deltas; since every update of a round starts from the same
/// global model `g`, averaging or taking medians of the client models `g + Δᵢ` is the
/// same as `g +` that statistic of the `Δᵢ` (what Flower computes on the models).
public protocol RoundAggregator: Sendable {
    /// The global model after `round` (1-based), from the round's `updates`, all based on `global`.
    mutating func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float]
    /// What the rule carries from round to round (a server optimizer's moments), for checkpoints; empty for stateless rules.
    var state: [Double] { get set }
}

extension RoundAggregator {
    public var state: [Double] {
        get { [] }
        set {}
    }
}

extension RoundAggregator {
    func check(_ global: [Float], _ updates: [ClientUpdate], round: Int) throws {
        guard !updates.isEmpty else { throw FederatedError("a round needs at least one update to aggregate") }
        for update in updates {
            try update.validate(modelSize: global.count)
            guard update.baseVersion == round - 1 else {
                throw FederatedError("client \(update.client)'s update is for round \(update.baseVersion + 1), not round \(round)")
            }
        }
    }
}

// MARK: - FedAvg and FedProx

/// FedAvg (McMahan et al.): the mean of the client models weighted by their example counts.
///
/// FedProx (Li et al.) aggregates the same way; its proximal term `μ/2 ‖w − g‖²` lives in
/// the clients' local loss (``LocalTraining/proximalMu``).
public struct FederatedAveraging: RoundAggregator {
    public init() {}

    public func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float] {
        try check(global, updates, round: round)
        return zip(global, Self.weightedMean(updates)).map { $0 + $1 }
    }

    /// Σ nᵢ Δᵢ / Σ nᵢ, accumulated in double precision.
    static func weightedMean(_ updates: [ClientUpdate]) -> [Float] {
        let total = Double(updates.reduce(0) { $0 + $1.examples })
        var sum = [Double](repeating: 0, count: updates[0].delta.count)
        for update in updates {
            let weight = Double(update.examples) / total
            update.delta.withUnsafeBufferPointer { delta in
                for index in sum.indices { sum[index] += weight * Double(delta[index]) }
            }
        }
        return sum.map { Float($0) }
    }
}

// MARK: - Robust rules

/// FedMedian (Yin et al.): the coordinate-wise median of the client models, unweighted;
/// an even count takes the mean of the two middle values.
public struct CoordinateMedian: RoundAggregator {
    public init() {}

    public func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float] {
        try check(global, updates, round: round)
        var column = [Float](repeating: 0, count: updates.count)
        var result = global
        let middle = updates.count / 2
        for index in global.indices {
            for (row, update) in updates.enumerated() { column[row] = global[index] + update.delta[index] }
            column.sort()
            result[index] = updates.count % 2 == 1 ? column[middle] : (column[middle - 1] + column[middle]) / 2
        }
        return result
    }
}

/// Trimmed mean (Yin et al.): per coordinate, drops the ⌊β·n⌋ lowest and highest client
/// values and averages the rest, unweighted.
public struct TrimmedMean: RoundAggregator {
    /// Share cut from each end, in [0, 0.5).
    public let beta: Double

    public init(beta: Double) throws {
        guard beta >= 0, beta < 0.5 else { throw FederatedError("trimmed mean's β must be in [0, 0.5), got \(beta)") }
        self.beta = beta
    }

    public func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float] {
        try check(global, updates, round: round)
        let cut = Int(beta * Double(updates.count))
        let kept = (cut)..<(updates.count - cut)
        var column = [Float](repeating: 0, count: updates.count)
        var result = global
        for index in global.indices {
            for (row, update) in updates.enumerated() { column[row] = global[index] + update.delta[index] }
            column.sort()
            var sum = 0.0
            for row in kept { sum += Double(column[row]) }
            result[index] = Float(sum / Double(kept.count))
        }
        return result
    }
}

/// Krum (Blanchard et al.): the client model whose summed squared distance to its
/// `n − f − 2` nearest neighbours is smallest; Multi-Krum with `keep > 0` averages the
/// `keep` best-scored models, weighted by examples.
public struct Krum: RoundAggregator {
    /// How many clients may be Byzantine (`f`).
    public let malicious: Int
    /// 0 for Krum; the number of models Multi-Krum averages otherwise.
    public let keep: Int

    public init(malicious: Int, keep: Int = 0) throws {
        guard malicious >= 0, keep >= 0 else { throw FederatedError("Krum needs f ≥ 0 and keep ≥ 0, got f = \(malicious), keep = \(keep)") }
        self.malicious = malicious
        self.keep = keep
    }

    public func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float] {
        try check(global, updates, round: round)
        guard keep <= updates.count else { throw FederatedError("Multi-Krum cannot keep \(keep) of \(updates.count) updates") }
        let scores = Self.scores(updates, malicious: malicious)
        let ranked = scores.indices.sorted { scores[$0] < scores[$1] }
        if keep == 0 { return zip(global, updates[ranked[0]].delta).map { $0 + $1 } }
        let chosen = ranked.prefix(keep).map { updates[$0] }
        return zip(global, FederatedAveraging.weightedMean(chosen)).map { $0 + $1 }
    }

    /// Each update's Krum score: the sum of its `max(1, n − f − 2)` smallest squared distances to the others.
    static func scores(_ updates: [ClientUpdate], malicious: Int) -> [Double] {
        let count = updates.count
        var distances = [[Double]](repeating: [Double](repeating: 0, count: count), count: count)
        for i in 0..<count {
            for j in (i + 1)..<count {
                var sum = 0.0
                for index in updates[i].delta.indices {
                    let difference = Double(updates[i].delta[index]) - Double(updates[j].delta[index])
                    sum += difference * difference
                }
                distances[i][j] = sum
                distances[j][i] = sum
            }
        }
        let closest = max(1, count - malicious - 2)
        return distances.enumerated().map { row, distance in
            var others = distance
            others.remove(at: row)
            return others.sorted().prefix(closest).reduce(0, +)
        }
    }
}

// MARK: - Server optimizers

/// FedAdam (Reddi et al., "Adaptive Federated Optimization"): the FedAvg delta is a
/// pseudo-gradient for an Adam step on the server, with bias correction at round `t`.
public struct FederatedAdam: RoundAggregator {
    public let learningRate: Double
    public let beta1: Double
    public let beta2: Double
    /// Adaptivity floor added to √v (Reddi et al.'s τ).
    public let tau: Double
    private var firstMoment: [Double] = []
    private var secondMoment: [Double] = []

    public init(learningRate: Double = 0.1, beta1: Double = 0.9, beta2: Double = 0.99, tau: Double = 1e-9) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
    }

    /// The first moments followed by the second.
    public var state: [Double] {
        get { firstMoment + secondMoment }
        set {
            firstMoment = Array(newValue.prefix(newValue.count / 2))
            secondMoment = Array(newValue.suffix(newValue.count / 2))
        }
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate], round: Int) throws -> [Float] {
        try check(global, updates, round: round)
        let delta = FederatedAveraging.weightedMean(updates)
        if firstMoment.count != global.count {
            firstMoment = [Double](repeating: 0, count: global.count)
            secondMoment = firstMoment
        }
        let t = Double(max(round, 1))
        let step = learningRate * (1 - pow(beta2, t)).squareRoot() / (1 - pow(beta1, t))
        var result = global
        for index in global.indices {
            let g = Double(delta[index])
            firstMoment[index] = beta1 * firstMoment[index] + (1 - beta1) * g
            secondMoment[index] = beta2 * secondMoment[index] + (1 - beta2) * g * g
            result[index] = Float(Double(global[index]) + step * firstMoment[index] / (secondMoment[index].squareRoot() + tau))
        }
        return result
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
