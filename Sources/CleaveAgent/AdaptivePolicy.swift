import CleaveProtocol
import FoundationEssentials

/// What each mode costs apart from the network, for one device and one model.
public struct ModeCosts: Sendable, Equatable {
    /// The whole model on the device, milliseconds.
    public var localMilliseconds: Double
    /// The head on the device, milliseconds.
    public var headMilliseconds: Double
    /// The tail, and the whole model, on the coordinator, milliseconds.
    public var tailMilliseconds: Double
    public var fullRemoteMilliseconds: Double
    /// Bytes published per request: a feature frame (split) and an input image (offload).
    public var splitBytes: Int
    public var offloadBytes: Int

    public init(
        localMilliseconds: Double, headMilliseconds: Double, tailMilliseconds: Double, fullRemoteMilliseconds: Double, splitBytes: Int,
        offloadBytes: Int
    ) {
        self.localMilliseconds = localMilliseconds
        self.headMilliseconds = headMilliseconds
        self.tailMilliseconds = tailMilliseconds
        self.fullRemoteMilliseconds = fullRemoteMilliseconds
        self.splitBytes = splitBytes
        self.offloadBytes = offloadBytes
    }

    /// Device times from the model's FLOPs and the profile's sustained GFLOP/s (`scale` multiplies
    /// the device's work: 10 emulates a board ten times slower or a model ten times heavier).
    public static func emulated(
        fullFLOPs: Int, headFLOPs: Int, profile: DeviceProfile, scale: Double = 1, serverGFLOPs: Double = 50, splitBytes: Int,
        offloadBytes: Int
    ) -> ModeCosts {
        let device = profile.gflops * 1e6 / scale
        return ModeCosts(
            localMilliseconds: Double(fullFLOPs) / device, headMilliseconds: Double(headFLOPs) / device,
            tailMilliseconds: Double(fullFLOPs - headFLOPs) / (serverGFLOPs * 1e6), fullRemoteMilliseconds: Double(fullFLOPs) / (serverGFLOPs * 1e6),
            splitBytes: splitBytes, offloadBytes: offloadBytes)
    }
}

/// Chooses local, split or offload for each request from what the agent's own traffic says
/// about the link (Neurosurgeon's idea, made to follow a changing link).
///
/// For each remote mode the policy keeps the network part of its recent answered
/// requests (latency minus the known compute times, last `memory` seconds) and predicts
/// `compute + median`; a mode without recent samples is predicted from the other one as
/// `rtt + bytes·8 / bandwidth` (bandwidth from the two modes' medians when both are known,
/// else a prior). Failures raise a loss estimate `p`, and a remote mode then costs
/// `(1 − p)·t + p·(hedge + local)` with `t = compute + network`, since a request whose
/// answer is late is computed locally after ``hedgeDelay(for:)``. The policy switches only
/// when another mode is predicted at least `hysteresis` (5%) cheaper.
///
/// It explores with real requests, not extra probes: one request goes to the remote mode it
/// is not using (the better of the two when it runs locally) every `explorationInterval`
/// seconds (four times that when that mode is predicted at more than twice the best), and
/// never more often than one request in `explorationSpacing`. After `breakerThreshold`
/// consecutive failures the remote path counts as gone: requests run locally and probes try
/// it again after 1, 2, then every 4 × `probeInterval` seconds. A request sent only to
/// measure (the first, a probe, or exploring while local is best) races a local computation
/// (``Decision/race``), so measuring never costs more than local; its answer, like any
/// answer that comes after its request was given up, is still recorded.
public struct AdaptivePolicy: Sendable {
    /// One decision and the numbers behind it.
    public struct Decision: Sendable, CustomStringConvertible {
        public var mode: InferenceMode
        /// Predicted milliseconds per mode.
        public var predicted: [InferenceMode: Double]
        public var reason: String
        /// Compute locally from the start as well and take the first answer: the request is
        /// there to measure the remote path (the first one, a probe, or exploring while local is
        /// the best mode), so it must not cost more than local; its remote answer still teaches
        /// the policy when it comes late (``record(mode:latency:now:)``).
        public var race = false

        public var description: String {
            let costs = [InferenceMode.local, .split, .offload].compactMap { mode in
                predicted[mode].map { "\(mode.rawValue) \($0.fixed(1)) ms" }
            }
            return "\(mode.rawValue) (\(reason); predicted \(costs.joined(separator: ", ")))"
        }
    }

    public private(set) var costs: ModeCosts
    /// Another mode must be predicted this much cheaper before the policy switches to it. Below
    /// the harness's 10% goal on purpose: at 0.2 an agent that came back from an outage on split
    /// stayed there although offload was 12% faster (`commute`, 2026-12-08). The predictions are
    /// medians over seconds of samples, so a small margin does not make the choice flap.
    public var hysteresis = 0.05
    /// Seconds between exploring requests.
    public var explorationInterval: Double = 4
    /// At least this many requests between exploring ones: at most 2.5% of requests look
    /// elsewhere, so exploration stays out of the 95th percentile at any request rate.
    public var explorationSpacing = 40
    public var breakerThreshold = 2
    public var probeInterval: Double = 1
    /// Seconds a network sample stays relevant.
    public var memory: Double = 4
    /// Milliseconds a request waits before it is counted as lost.
    public var timeout: Double
    /// Bandwidth assumed before two payload sizes have been measured, bit/s.
    public var priorBandwidth: Double = 5e6

    private var samples: [InferenceMode: [(time: Double, network: Double)]] = [:]
    private var lossRate = 0.0
    private var consecutiveFailures = 0
    private var remoteDown = false
    private var lastProbe = -Double.infinity
    private var lastExploration = 0.0
    private var requestsSinceExploration = 0
    /// Whether any remote answer has been measured yet.
    private var everMeasured = false
    private var now = 0.0
    private(set) public var current: InferenceMode = .split

    public init(costs: ModeCosts, timeout: Double) {
        self.costs = costs
        self.timeout = timeout
    }

    private func compute(_ mode: InferenceMode) -> Double {
        mode == .split ? costs.headMilliseconds + costs.tailMilliseconds : costs.fullRemoteMilliseconds
    }

    private func bytes(_ mode: InferenceMode) -> Int { mode == .split ? costs.splitBytes : costs.offloadBytes }

    /// Median network milliseconds of `mode` over the last `memory` seconds.
    private func recentNetwork(_ mode: InferenceMode) -> Double? {
        let recent = (samples[mode] ?? []).filter { now - $0.time <= memory }.map(\.network).sorted()
        return recent.isEmpty ? nil : recent[recent.count / 2]
    }

    /// Estimated round-trip time (ms), uplink bandwidth (bit/s) and loss rate of the link.
    public var link: (rtt: Double?, bandwidth: Double, loss: Double) {
        let split = recentNetwork(.split)
        let offload = recentNetwork(.offload)
        var bandwidth = priorBandwidth
        if let split, let offload, offload > split {
            bandwidth = Double((costs.offloadBytes - costs.splitBytes) * 8) / (offload - split) * 1000
        }
        let rtt =
            split.map { $0 - Double(costs.splitBytes * 8) / bandwidth * 1000 }
            ?? offload.map { $0 - Double(costs.offloadBytes * 8) / bandwidth * 1000 }
        return (rtt.map { max(0.05, $0) }, bandwidth, lossRate)
    }

    /// Predicted milliseconds of each mode under the current estimates (remote modes are
    /// missing until something has been measured).
    public func predictions() -> [InferenceMode: Double] {
        var predicted: [InferenceMode: Double] = [.local: costs.localMilliseconds]
        let estimate = link
        for mode in [InferenceMode.split, .offload] {
            let network = recentNetwork(mode) ?? estimate.rtt.map { $0 + Double(bytes(mode) * 8) / estimate.bandwidth * 1000 }
            guard let network else { continue }
            let answered = compute(mode) + network
            // A lost request costs the hedging delay plus the local computation that replaces it.
            let lost = max(1.5 * answered, costs.localMilliseconds) + 10 + costs.localMilliseconds
            predicted[mode] = (1 - lossRate) * answered + lossRate * lost
        }
        return predicted
    }

    /// How long to wait for a remote answer before computing locally as well (hedging):
    /// half again the mode's predicted time, at least the local time, plus 10 ms.
    public func hedgeDelay(for mode: InferenceMode) -> Double {
        let estimate = link
        let network = recentNetwork(mode) ?? estimate.rtt.map { $0 + Double(bytes(mode) * 8) / estimate.bandwidth * 1000 }
        let answered = network.map { compute(mode) + $0 } ?? costs.localMilliseconds
        // Never wait much longer than the best mode would take: an exploring or probing request
        // to a slow path must not cost more than a hedge on the best one.
        let best = predictions().values.min() ?? costs.localMilliseconds
        return min(max(1.5 * answered, costs.localMilliseconds), max(1.5 * best, costs.localMilliseconds)) + 10
    }

    /// The mode for the next request at `time` (seconds on any monotonic clock).
    public mutating func decide(now time: Double) -> Decision {
        now = time
        let predicted = predictions()
        if remoteDown {
            // Probes back off: 1, 2, 4 × probeInterval while the path stays down (and start again at
            // once when the broker connection comes back, see `reconnected(now:)`).
            let backoff = probeInterval * Double(1 << min(2, max(0, consecutiveFailures - breakerThreshold)))
            if now - lastProbe >= backoff {
                lastProbe = now
                return Decision(
                    mode: current == .offload ? .offload : .split, predicted: predicted, reason: "remote path down: probing", race: true)
            }
            return Decision(mode: .local, predicted: predicted, reason: "remote path down after \(consecutiveFailures) failures")
        }
        guard predicted[.split] != nil || predicted[.offload] != nil else {
            guard everMeasured else { return Decision(mode: .split, predicted: predicted, reason: "first measurement", race: true) }
            // The remote estimates aged out while requests ran locally: look again at the usual pace.
            current = .local
            if now - lastExploration >= explorationInterval {
                lastExploration = now
                requestsSinceExploration = 0
                return Decision(mode: .split, predicted: predicted, reason: "exploring (estimates stale)", race: true)
            }
            return Decision(mode: .local, predicted: predicted, reason: "no recent remote measurement")
        }
        let best = predicted.min { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue < $1.key.rawValue) }!
        if best.key != current, best.value < (predicted[current] ?? .infinity) * (1 - hysteresis) {
            current = best.key
        }
        let candidates = [InferenceMode.split, .offload].filter { $0 != current }
        let explore = candidates.min { (predicted[$0] ?? 0) < (predicted[$1] ?? 0) }!
        // A mode predicted at more than twice the best is looked at four times less often.
        let far = (predicted[explore] ?? .infinity) > 2 * best.value
        requestsSinceExploration += 1
        if now - lastExploration >= explorationInterval * (far ? 4 : 1) && requestsSinceExploration > explorationSpacing {
            lastExploration = now
            requestsSinceExploration = 0
            return Decision(mode: explore, predicted: predicted, reason: "exploring", race: current == .local)
        }
        return Decision(mode: current, predicted: predicted, reason: current == best.key ? "cheapest" : "within hysteresis of the cheapest")
    }

    /// A frame of `bytes` was sent in `mode`: what that mode sends from now on (frames vary
    /// with zstd; the last size is the best guess for the next).
    public mutating func observeFrame(mode: InferenceMode, bytes: Int) {
        if mode == .split { costs.splitBytes = bytes } else if mode == .offload { costs.offloadBytes = bytes }
    }

    /// The broker connection is back: the next request measures the remote path (a probe if
    /// it counted as down, else an exploring request), instead of waiting for the probes'
    /// back-off or the exploration interval — an outage's end is known at once. (Without it, an
    /// agent that had served locally only because it had no connection, its estimates aged out,
    /// waited up to `explorationInterval` after the reconnect before it looked again.)
    public mutating func reconnected(now time: Double) {
        now = time
        lastProbe = -Double.infinity
        lastExploration = -Double.infinity
        requestsSinceExploration = explorationSpacing + 1
    }

    /// What happened to a request sent in `mode` at `time`: its latency (ms) when it was answered,
    /// nil when it was not answered in time. An answer that comes after the request was given
    /// up (and counted as a failure) is recorded as well: the path is alive, only slow.
    public mutating func record(mode: InferenceMode, latency: Double?, now time: Double) {
        now = time
        guard mode != .local else { return }
        guard let latency else {
            lossRate = 0.7 * lossRate + 0.3
            consecutiveFailures += 1
            if consecutiveFailures >= breakerThreshold && !remoteDown {
                remoteDown = true
                lastProbe = now
            }
            return
        }
        // An answer after the path counted as down ends an outage, which is not packet loss:
        // the loss estimate starts again (it kept a recovered link predicted slow for seconds).
        lossRate = remoteDown ? 0 : lossRate * 0.5
        everMeasured = true
        consecutiveFailures = 0
        remoteDown = false
        samples[mode, default: []].append((now, max(0.05, latency - compute(mode))))
        samples[mode]!.removeAll { now - $0.time > memory }
    }
}
