import Synchronization

/// Counters of a proxy, exported as Prometheus text.
public final class ProxyMetrics: Sendable {
    /// Counters of one direction.
    public final class DirectionCounters: Sendable {
        /// Bytes handed on.
        public let bytes = Atomic<Int>(0)
        public let packets = Atomic<Int>(0)
        /// Packets that paid a retransmission delay.
        public let lost = Atomic<Int>(0)
        /// Sum over packets of (delivery − arrival), microseconds.
        public let delayMicroseconds = Atomic<Int>(0)
    }

    public let uplink = DirectionCounters()
    public let downlink = DirectionCounters()
    /// Connections joined to the upstream.
    public let accepted = Atomic<Int>(0)
    /// Connections turned away (link down with `refuse`, or the upstream unreachable).
    public let refused = Atomic<Int>(0)
    /// Connections reset on purpose.
    public let resets = Atomic<Int>(0)

    /// The counters in Prometheus' text exposition format, labelled with `proxy`.
    public func text(proxy: String) -> String {
        var lines: [String] = []
        for (direction, counters) in [("uplink", uplink), ("downlink", downlink)] {
            let label = "{proxy=\"\(proxy)\",direction=\"\(direction)\"}"
            lines.append("cleave_netem_bytes_total\(label) \(counters.bytes.load(ordering: .relaxed))")
            lines.append("cleave_netem_packets_total\(label) \(counters.packets.load(ordering: .relaxed))")
            lines.append("cleave_netem_lost_packets_total\(label) \(counters.lost.load(ordering: .relaxed))")
            lines.append(
                "cleave_netem_delay_seconds_total\(label) \(Double(counters.delayMicroseconds.load(ordering: .relaxed)) / 1e6)")
        }
        let label = "{proxy=\"\(proxy)\"}"
        lines.append("cleave_netem_connections_accepted_total\(label) \(accepted.load(ordering: .relaxed))")
        lines.append("cleave_netem_connections_refused_total\(label) \(refused.load(ordering: .relaxed))")
        lines.append("cleave_netem_connections_reset_total\(label) \(resets.load(ordering: .relaxed))")
        return lines.joined(separator: "\n") + "\n"
    }
}
