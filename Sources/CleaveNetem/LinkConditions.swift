/// What one direction of a link does to the bytes crossing it.
public struct LinkConditions: Sendable, Equatable {
    /// How packets are lost.
    public enum Loss: Sendable, Equatable {
        case none
        /// Each packet independently with this probability.
        case random(Double)
        /// Gilbert–Elliott: a good and a bad state with their own loss probabilities;
        /// `enterBad` and `leaveBad` are the per-packet chances of switching (bursty loss).
        case gilbertElliott(enterBad: Double, leaveBad: Double, lossGood: Double, lossBad: Double)

        /// The long-run loss rate.
        public var meanRate: Double {
            switch self {
            case .none: 0
            case .random(let p): p
            case .gilbertElliott(let enterBad, let leaveBad, let lossGood, let lossBad):
                enterBad + leaveBad == 0 ? lossGood : (leaveBad * lossGood + enterBad * lossBad) / (enterBad + leaveBad)
            }
        }
    }

    /// What happens while the link is down.
    public enum Outage: String, Sendable, Equatable {
        /// Bytes wait and connections stay open (a radio fade; TCP keeps retrying).
        case hold
        /// Open connections are reset and new ones refused (an interface gone).
        case refuse
    }

    /// Bottleneck rate in bits per second (nil: unlimited).
    public var rate: Double?
    /// Bytes the bucket may send at once above the rate (0: strict pacing).
    public var burstBytes: Int = 0
    /// One-way delay added to every packet, milliseconds.
    public var latency: Double = 0
    /// Uniform extra delay in 0…jitter, milliseconds (order is kept: TCP delivers in order).
    public var jitter: Double = 0
    public var loss: Loss = .none
    /// Delay a lost packet costs before its retransmission arrives, milliseconds (TCP's
    /// minimum retransmission timeout is 200 ms on Linux).
    public var retransmitDelay: Double = 200
    /// Packet size the link works in, bytes.
    public var packetBytes: Int = 1448
    /// Whether the link is up; when down, `outage` says what happens.
    public var up: Bool = true
    public var outage: Outage = .hold

    public init(rate: Double? = nil, latency: Double = 0, jitter: Double = 0, loss: Loss = .none) {
        self.rate = rate
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
    }

    /// Checks the ranges; the message names the field.
    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw NetemError(message) } }
        if let rate { try check(rate > 0 && rate.isFinite, "rate must be positive, it is \(rate) bit/s") }
        try check(burstBytes >= 0, "burst must be ≥ 0 bytes, it is \(burstBytes)")
        try check(latency >= 0 && latency.isFinite, "latency must be ≥ 0 ms, it is \(latency)")
        try check(jitter >= 0 && jitter.isFinite, "jitter must be ≥ 0 ms, it is \(jitter)")
        try check(retransmitDelay >= 0, "retransmit delay must be ≥ 0 ms, it is \(retransmitDelay)")
        try check(packetBytes >= 64 && packetBytes <= 65_536, "packet size must be 64…65536 bytes, it is \(packetBytes)")
        switch loss {
        case .none: break
        case .random(let p): try check((0...1).contains(p), "loss must be 0…100%, it is \(p * 100)%")
        case .gilbertElliott(let a, let b, let g, let h):
            try check([a, b, g, h].allSatisfy { (0...1).contains($0) }, "Gilbert–Elliott probabilities must be 0…1")
        }
    }
}

// MARK: - Units in text

extension LinkConditions {
    /// Bits per second from `64kbit`, `1.5mbit`, `50Mbps`, `100000` (bit/s) or `2gbit`.
    public static func parseRate(_ text: String) throws -> Double {
        let lower = text.lowercased().replacing(" ", with: "")
        let units: [(String, Double)] = [
            ("gbit", 1e9), ("gbps", 1e9), ("mbit", 1e6), ("mbps", 1e6), ("kbit", 1e3), ("kbps", 1e3), ("bit", 1), ("bps", 1),
        ]
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            if let value = Double(lower.dropLast(suffix.count)), value > 0 { return value * factor }
        }
        if let value = Double(lower), value > 0 { return value }
        throw NetemError("'\(text)' is not a rate: write e.g. 64kbit, 1.5mbit or 50mbit")
    }

    /// Milliseconds from `50ms`, `1.5s`, `200us` or a bare number of milliseconds.
    public static func parseDuration(_ text: String) throws -> Double {
        let lower = text.lowercased().replacing(" ", with: "")
        for (suffix, factor) in [("ms", 1.0), ("us", 0.001), ("s", 1000.0), ("m", 60_000.0)] where lower.hasSuffix(suffix) {
            if let value = Double(lower.dropLast(suffix.count)), value >= 0 { return value * factor }
        }
        if let value = Double(lower), value >= 0 { return value }
        throw NetemError("'\(text)' is not a duration: write e.g. 50ms or 1.5s")
    }

    /// A probability from `1%`, `0.5%` or `0.01`.
    public static func parseProbability(_ text: String) throws -> Double {
        let trimmed = text.replacing(" ", with: "")
        let value = trimmed.hasSuffix("%") ? Double(trimmed.dropLast()).map { $0 / 100 } : Double(trimmed)
        guard let value, (0...1).contains(value) else { throw NetemError("'\(text)' is not a probability: write e.g. 1% or 0.01") }
        return value
    }
}
