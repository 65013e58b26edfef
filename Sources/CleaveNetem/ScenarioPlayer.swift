import Foundation

/// Applies a scenario's timeline to running proxies, one proxy per link name.
public struct ScenarioPlayer: Sendable {
    public let scenario: Scenario
    public let proxies: [NetemProxy]

    public init(scenario: Scenario, proxies: [NetemProxy]) {
        self.scenario = scenario
        self.proxies = proxies
    }

    /// Every change in time order: (milliseconds after the start, proxy, step).
    public var events: [(at: Double, proxy: NetemProxy, step: Scenario.Step)] {
        proxies.flatMap { proxy in scenario.timeline(for: proxy.name).map { (at: $0.at, proxy: proxy, step: $0) } }
            .sorted { $0.at < $1.at }
    }

    /// Runs the timeline from now for the scenario's duration, calling `log` at each change;
    /// returns early when `shouldStop` says so (checked every 50 ms).
    public func play(log: (String) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws {
        let start = monotonicSeconds()
        let end = start + scenario.duration / 1000
        for event in events {
            let due = start + event.at / 1000
            while monotonicSeconds() < due {
                if shouldStop() { return }
                sleep(until: min(due, monotonicSeconds() + 0.05))
            }
            try event.proxy.setConditions(
                uplink: event.step.uplink, downlink: event.step.downlink, uplinkTrace: event.step.uplinkTrace,
                downlinkTrace: event.step.downlinkTrace)
            log("t=\(String(format: "%.1f", event.at / 1000))s \(event.proxy.name): \(Self.describe(event.step))")
        }
        while monotonicSeconds() < end {
            if shouldStop() { return }
            sleep(until: min(end, monotonicSeconds() + 0.05))
        }
    }

    /// One line: `up 1.0 Mbit/s / down 1.0 Mbit/s, 50 ms ± 10 ms, loss 1%`.
    public static func describe(_ step: Scenario.Step) -> String {
        describe(uplink: step.uplink, downlink: step.downlink, uplinkTrace: step.uplinkTrace, downlinkTrace: step.downlinkTrace)
    }

    public static func describe(
        uplink: LinkConditions, downlink: LinkConditions, uplinkTrace: DeliveryTrace? = nil, downlinkTrace: DeliveryTrace? = nil
    ) -> String {
        if !uplink.up || !downlink.up { return "down (\(uplink.up ? downlink.outage.rawValue : uplink.outage.rawValue))" }
        func rate(_ c: LinkConditions, _ trace: DeliveryTrace?) -> String {
            if let trace { return "trace \(format(trace.meanRate))" }
            return c.rate.map(format) ?? "unlimited"
        }
        var parts = ["up \(rate(uplink, uplinkTrace)) / down \(rate(downlink, downlinkTrace))"]
        parts.append(String(format: "%.0f ms", uplink.latency) + (uplink.jitter > 0 ? String(format: " ± %.0f ms", uplink.jitter / 2) : ""))
        if uplink.loss != .none { parts.append(String(format: "loss %.2f%%", uplink.loss.meanRate * 100)) }
        return parts.joined(separator: ", ")
    }

    /// A link rate in bits per second, as people write it (`800 kbit/s`, `2.0 Mbit/s`).
    public static func format(_ rate: Double) -> String {
        rate >= 1e6 ? String(format: "%.1f Mbit/s", rate / 1e6) : String(format: "%.0f kbit/s", rate / 1e3)
    }
}
