/// A federated strategy and its settings, as a run names it (`--strategy fedbuff --buffer 5`).
public enum StrategyChoice: Sendable, Equatable, CustomStringConvertible {
    case fedAvg
    /// FedAvg aggregation with the proximal term μ in the clients' loss.
    case fedProx(mu: Float)
    case fedAdam(learningRate: Double)
    case fedMedian
    case trimmedMean(beta: Double)
    case krum(malicious: Int, keep: Int)
    case fedAsync(alpha: Double, exponent: Double)
    case fedBuff(bufferSize: Int, serverLearningRate: Double)
    /// FedFix with interval Δt in seconds; `correctForTime` weighs slow clients up by the intervals they spanned.
    case fedFix(interval: Double, correctForTime: Bool)

    /// Whether updates are aggregated round by round (the server waits) or as they arrive.
    public var isSynchronous: Bool {
        switch self {
        case .fedAvg, .fedProx, .fedAdam, .fedMedian, .trimmedMean, .krum: true
        case .fedAsync, .fedBuff, .fedFix: false
        }
    }

    /// The name used on the command line and in result files.
    public var name: String {
        switch self {
        case .fedAvg: "fedavg"
        case .fedProx: "fedprox"
        case .fedAdam: "fedadam"
        case .fedMedian: "fedmedian"
        case .trimmedMean: "trimmed-mean"
        case .krum(_, let keep): keep > 0 ? "multi-krum" : "krum"
        case .fedAsync: "fedasync"
        case .fedBuff: "fedbuff"
        case .fedFix: "fedfix"
        }
    }

    public var description: String {
        switch self {
        case .fedAvg, .fedMedian: name
        case .fedProx(let mu): "fedprox (μ = \(mu))"
        case .fedAdam(let rate): "fedadam (η = \(rate))"
        case .trimmedMean(let beta): "trimmed-mean (β = \(beta))"
        case .krum(let f, let keep): keep > 0 ? "multi-krum (f = \(f), keep \(keep))" : "krum (f = \(f))"
        case .fedAsync(let alpha, let exponent): "fedasync (α = \(alpha), staleness exponent \(exponent))"
        case .fedBuff(let k, let rate): "fedbuff (K = \(k), η = \(rate))"
        case .fedFix(let interval, let corrected): "fedfix (Δt = \(interval) s\(corrected ? ", time-corrected weights" : ""))"
        }
    }

    /// The strategy's μ for the clients' local loss (0 but for FedProx).
    public var proximalMu: Float {
        if case .fedProx(let mu) = self { return mu }
        return 0
    }

    /// The round-by-round aggregator of a synchronous strategy.
    public func roundAggregator() throws -> any RoundAggregator {
        switch self {
        case .fedAvg, .fedProx: FederatedAveraging()
        case .fedAdam(let rate): FederatedAdam(learningRate: rate)
        case .fedMedian: CoordinateMedian()
        case .trimmedMean(let beta): try TrimmedMean(beta: beta)
        case .krum(let f, let keep): try Krum(malicious: f, keep: keep)
        case .fedAsync, .fedBuff, .fedFix: throw FederatedError("\(name) is asynchronous: it has no rounds")
        }
    }

    /// The arrival-driven aggregator of an asynchronous strategy; `shares` are the clients' data shares.
    public func streamingAggregator(shares: [Double]) throws -> any StreamingAggregator {
        switch self {
        case .fedAsync(let alpha, let exponent): try AsynchronousAveraging(alpha: alpha, staleness: StalenessWeight(exponent: exponent))
        case .fedBuff(let k, let rate): try BufferedAggregation(bufferSize: k, serverLearningRate: rate)
        case .fedFix(let interval, let corrected): try FixedIntervalAggregation(interval: interval, shares: shares, correctForTime: corrected)
        default: throw FederatedError("\(name) is synchronous: it aggregates whole rounds")
        }
    }
}
