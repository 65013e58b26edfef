import CleaveSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Decides when each packet of one direction of one connection is delivered.
///
/// The model is a bottleneck link: a token bucket (rate, burst) serializes packets;
/// each then takes the one-way latency plus a uniform jitter, never overtaking the
/// packet before it (TCP delivers in order); a lost packet costs a retransmission
/// delay and occupies the bottleneck again. With a delivery trace (Mahimahi format)
/// the trace's delivery opportunities replace the token bucket. All randomness comes
/// from a seeded generator, so a run repeats exactly for the same arrivals.
struct LinkShaper {
    private var random: SeededGenerator
    /// GCRA's theoretical arrival time of the next packet, seconds.
    private var theoreticalArrival = 0.0
    private var lastRelease = 0.0
    private var inBadState = false
    private var traceCursor: DeliveryTrace.Cursor?

    init(seed: UInt64) { random = SeededGenerator(seed: seed) }

    struct Decision {
        /// When the packet's bytes may be handed to the receiver (monotonic seconds).
        var release: Double
        var lost: Bool
    }

    /// The delivery time of `bytes` that arrived at `arrival` (monotonic seconds) under `conditions`.
    mutating func schedule(bytes: Int, arrival: Double, conditions c: LinkConditions, trace: DeliveryTrace?) -> Decision {
        var delivered: Double
        if let trace {
            if traceCursor == nil { traceCursor = trace.cursor(start: arrival) }
            delivered = traceCursor!.deliver(bytes: bytes, arrival: arrival)
        } else if let rate = c.rate {
            let serialization = Double(bytes * 8) / rate
            let tolerance = Double(c.burstBytes * 8) / rate
            let start = max(arrival, theoreticalArrival - tolerance)
            theoreticalArrival = max(start, theoreticalArrival) + serialization
            delivered = start + serialization
        } else {
            delivered = arrival
        }
        let lost = drawLoss(c.loss)
        var release = delivered + c.latency / 1000 + (c.jitter > 0 ? random.uniform() * c.jitter / 1000 : 0)
        if lost {
            release += c.retransmitDelay / 1000
            if let rate = c.rate, trace == nil { theoreticalArrival += Double(bytes * 8) / rate }
        }
        release = max(release, lastRelease)
        lastRelease = release
        return Decision(release: release, lost: lost)
    }

    private mutating func drawLoss(_ loss: LinkConditions.Loss) -> Bool {
        switch loss {
        case .none:
            return false
        case .random(let p):
            return random.uniform() < p
        case .gilbertElliott(let enterBad, let leaveBad, let lossGood, let lossBad):
            if inBadState {
                if random.uniform() < leaveBad { inBadState = false }
            } else if random.uniform() < enterBad {
                inBadState = true
            }
            return random.uniform() < (inBadState ? lossBad : lossGood)
        }
    }
}

/// A Mahimahi delivery trace: one integer millisecond per line, each an opportunity to
/// deliver one 1500-byte packet; the trace repeats after its last timestamp.
public struct DeliveryTrace: Sendable, Equatable {
    public let opportunities: [Int]
    public static let bytesPerOpportunity = 1500

    /// Parses the text of a trace; an error names the line.
    public init(text: String, name: String = "trace") throws {
        var values: [Int] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let value = Int(trimmed), value >= 0 else {
                throw NetemError("\(name) line \(index + 1): '\(trimmed)' is not a whole number of milliseconds")
            }
            if let last = values.last, value < last {
                throw NetemError("\(name) line \(index + 1): \(value) ms comes before the previous line's \(last) ms")
            }
            values.append(value)
        }
        guard let last = values.last, last > 0 else {
            throw NetemError("\(name) has no delivery opportunities after 0 ms (it needs at least one line > 0)")
        }
        opportunities = values
    }

    /// Mean rate of the trace, bits per second.
    public var meanRate: Double {
        Double(opportunities.count * Self.bytesPerOpportunity * 8) / (Double(opportunities.last!) / 1000)
    }

    func cursor(start: Double) -> Cursor { Cursor(trace: self, start: start) }

    /// Walks the opportunities in absolute time from `start`.
    struct Cursor {
        let trace: DeliveryTrace
        let start: Double
        private var loop = 0
        private var index = 0
        /// Bytes left in the opportunity last used.
        private var credit = 0
        private var creditTime = 0.0

        init(trace: DeliveryTrace, start: Double) {
            self.trace = trace
            self.start = start
        }

        private var period: Double { Double(trace.opportunities.last!) / 1000 }

        private mutating func nextOpportunity() -> Double {
            let time = start + Double(loop) * period + Double(trace.opportunities[index]) / 1000
            index += 1
            if index == trace.opportunities.count {
                index = 0
                loop += 1
            }
            return time
        }

        /// When the last of `bytes` arriving at `arrival` is delivered.
        mutating func deliver(bytes: Int, arrival: Double) -> Double {
            var remaining = bytes
            var time = creditTime
            if credit > 0 && creditTime >= arrival {
                let used = min(credit, remaining)
                credit -= used
                remaining -= used
            }
            while remaining > 0 {
                time = nextOpportunity()
                if time < arrival { continue }
                let used = min(DeliveryTrace.bytesPerOpportunity, remaining)
                remaining -= used
                credit = DeliveryTrace.bytesPerOpportunity - used
                creditTime = time
            }
            return max(time, arrival)
        }
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

/// Sleeps until `deadline` on the monotonic clock.
func sleep(until deadline: Double) {
    var target = timespec(tv_sec: Int(deadline), tv_nsec: Int((deadline - Double(Int(deadline))) * 1e9))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, nil) == EINTR {}
}
