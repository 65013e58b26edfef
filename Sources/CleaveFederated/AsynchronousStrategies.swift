#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An asynchronous aggregation rule: updates arrive one at a time, each based on the
/// global model of its own version, and the rule decides when the global model moves.
///
/// Staleness is the number of aggregations since the update's base model:
/// `version − update.baseVersion`.
public protocol StreamingAggregator: Sendable {
    /// Takes one update at time `now` (seconds). Returns the new global model when this
    /// update triggers an aggregation, nil when it is only buffered.
    mutating func receive(_ update: ClientUpdate, global: [Float], version: Int, now: Double) throws -> [Float]?
    /// Called when the clock reaches `now` with no arrival: a time-driven rule (FedFix) may
    /// aggregate what it holds. Returns the new global model, or nil.
    mutating func tick(global: [Float], version: Int, now: Double) throws -> [Float]?
    /// The next time (seconds) at which ``tick(global:version:now:)`` wants to be called, if any.
    func nextTick(after now: Double) -> Double?
}

extension StreamingAggregator {
    public mutating func tick(global: [Float], version: Int, now: Double) throws -> [Float]? { nil }
    public func nextTick(after now: Double) -> Double? { nil }

    func check(_ update: ClientUpdate, _ global: [Float], version: Int) throws {
        try update.validate(modelSize: global.count)
        guard update.baseVersion <= version, update.baseVersion >= 0 else {
            throw FederatedError("client \(update.client) claims base version \(update.baseVersion), the server is at \(version)")
        }
    }
}

/// A weight that shrinks with staleness `s`: `(1 + s)^−exponent` (FedAsync's polynomial
/// rule; exponent ½ is FedBuff's `1/√(1+s)`).
public struct StalenessWeight: Sendable, Equatable {
    public let exponent: Double

    public init(exponent: Double = 0.5) { self.exponent = exponent }

    public func callAsFunction(_ staleness: Int) -> Double { pow(1 + Double(max(0, staleness)), -exponent) }
}

// MARK: - Asynchronous FedAvg

/// Asynchronous FedAvg (FedAsync, Xie et al.): every arriving update moves the global model
/// at once, by `α · s(staleness) · Δᵢ`.
public struct AsynchronousAveraging: StreamingAggregator {
    /// Mixing rate for a fresh update.
    public let alpha: Double
    public let staleness: StalenessWeight

    public init(alpha: Double, staleness: StalenessWeight = StalenessWeight()) throws {
        guard alpha > 0, alpha <= 1 else { throw FederatedError("asynchronous FedAvg's α must be in (0, 1], got \(alpha)") }
        self.alpha = alpha
        self.staleness = staleness
    }

    public func receive(_ update: ClientUpdate, global: [Float], version: Int, now: Double) throws -> [Float]? {
        try check(update, global, version: version)
        let rate = Float(alpha * staleness(version - update.baseVersion))
        return zip(global, update.delta).map { $0 + rate * $1 }
    }
}

// MARK: - FedBuff

/// FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation"):
/// updates are buffered, each weighted by its staleness; every `K` arrivals the buffer's
/// mean moves the global model by the server learning rate.
public struct BufferedAggregation: StreamingAggregator {
    /// Updates per aggregation (K).
    public let bufferSize: Int
    /// Server learning rate η_g applied to the buffer's mean.
    public let serverLearningRate: Double
    public let staleness: StalenessWeight
    private var sum: [Double] = []
    private var held = 0

    public init(bufferSize: Int, serverLearningRate: Double = 1, staleness: StalenessWeight = StalenessWeight()) throws {
        guard bufferSize >= 1 else { throw FederatedError("FedBuff needs K ≥ 1, got \(bufferSize)") }
        guard serverLearningRate > 0 else { throw FederatedError("FedBuff's server learning rate must be positive, got \(serverLearningRate)") }
        self.bufferSize = bufferSize
        self.serverLearningRate = serverLearningRate
        self.staleness = staleness
    }

    /// Updates waiting in the buffer.
    public var buffered: Int { held }

    public mutating func receive(_ update: ClientUpdate, global: [Float], version: Int, now: Double) throws -> [Float]? {
        try check(update, global, version: version)
        if sum.count != global.count { sum = [Double](repeating: 0, count: global.count) }
        let weight = staleness(version - update.baseVersion)
        for index in sum.indices { sum[index] += weight * Double(update.delta[index]) }
        held += 1
        guard held >= bufferSize else { return nil }
        let scale = serverLearningRate / Double(held)
        let result = zip(global, sum).map { $0 + Float(scale * $1) }
        sum = [Double](repeating: 0, count: global.count)
        held = 0
        return result
    }
}

// MARK: - FedFix

/// FedFix (Fraboni et al., "A General Theory for Federated Optimization with Asynchronous
/// and Heterogeneous Clients Updates"): the server aggregates at a fixed interval Δt
/// whatever updates have arrived, and clients that finished start again from the new model.
///
/// Each update that arrived is weighted by its client's data share `pᵢ` (the default:
/// the model moves by `Σ pᵢ Δᵢ` over the clients that made it in time). With
/// `correctForTime`, the share is divided by the client's chance `qᵢ = 1/kᵢ` of contributing
/// to an aggregation, `kᵢ` being the intervals from its base model's aggregation to the one
/// that takes the update: in expectation every client then weighs its share, as the
/// theory's unbiasedness condition asks, but one slow update can move the model far (on
/// the heterogeneous fleet of docs/results.md it swung accuracy by up to 8 pt; the plain
/// weights did not).
public struct FixedIntervalAggregation: StreamingAggregator {
    /// Seconds between aggregations (Δt).
    public let interval: Double
    /// Each client's share of all training examples, by client index (pᵢ, summing to 1).
    public let shares: [Double]
    public let correctForTime: Bool
    private var sum: [Double] = []
    private var held = 0
    private var nextAggregation: Double
    /// Intervals elapsed, and the interval count at which each global version was made.
    private var intervals = 0
    private var versionIntervals: [Int: Int] = [0: 0]

    public init(interval: Double, shares: [Double], correctForTime: Bool = false, start: Double = 0) throws {
        guard interval > 0, interval.isFinite else { throw FederatedError("FedFix's interval Δt must be positive, got \(interval)") }
        guard !shares.isEmpty, shares.allSatisfy({ $0 >= 0 }), abs(shares.reduce(0, +) - 1) < 1e-6 else {
            throw FederatedError("FedFix's client shares must be non-negative and sum to 1")
        }
        self.interval = interval
        self.shares = shares
        self.correctForTime = correctForTime
        nextAggregation = start + interval
    }

    /// Updates waiting for the next aggregation.
    public var buffered: Int { held }

    public mutating func receive(_ update: ClientUpdate, global: [Float], version: Int, now: Double) throws -> [Float]? {
        try check(update, global, version: version)
        guard shares.indices.contains(update.client) else { throw FederatedError("client \(update.client) is not one of the run's \(shares.count)") }
        if sum.count != global.count { sum = [Double](repeating: 0, count: global.count) }
        let spanned = Double(intervals + 1 - (versionIntervals[update.baseVersion] ?? 0))
        let weight = shares[update.client] * (correctForTime ? spanned : 1)
        for index in sum.indices { sum[index] += weight * Double(update.delta[index]) }
        held += 1
        return nil
    }

    public mutating func tick(global: [Float], version: Int, now: Double) throws -> [Float]? {
        guard now >= nextAggregation else { return nil }
        while nextAggregation <= now {
            nextAggregation += interval
            intervals += 1
        }
        guard held > 0 else { return nil }
        let result = zip(global, sum).map { $0 + Float($1) }
        sum = [Double](repeating: 0, count: global.count)
        held = 0
        versionIntervals[version + 1] = intervals
        return result
    }

    /// The next aggregation time: fixed by the interval, whatever arrives in between.
    public func nextTick(after now: Double) -> Double? { nextAggregation }
}
