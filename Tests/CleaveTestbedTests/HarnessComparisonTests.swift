import CleaveNetem
import Testing

@testable import CleaveTestbed

/// The per-phase comparison that `cleave harness run` prints and `docs/results.md` quotes.
@Suite struct HarnessComparisonTests {
    static let scenario = try! Scenario.parse(
        """
        name: two-phases
        description: fast, then down
        duration: 20s
        links:
          default:
            - at: 0s
              rate: 10mbit
            - at: 10s
              down: hold
        """, source: "two-phases.yaml")

    /// One request every 0.1 s; `latency(time)` nil means lost.
    static func run(_ name: String, _ latency: (Double) -> Double?) -> HarnessReport {
        let records = (0..<200).map { index -> RequestRecord in
            let time = Double(index) / 10
            let value = latency(time)
            return RequestRecord(
                time: time, agent: "a1", mode: name, bytes: 0, latencyMilliseconds: value ?? 2000, outcome: value == nil ? "timeout" : "ok")
        }
        return HarnessReport(scenario: scenario, run: name, records: records, link: "a1")
    }

    @Test func phasesLeaveOutTheSettleTimeAndChargeLostRequests() {
        let local = Self.run("local") { _ in 80 }
        let remote = Self.run("split") { $0 < 10 ? 20 : nil }
        let adaptive = Self.run("adaptive") { time in time < 10 ? 21 : (time < 12 ? 500 : 81) }
        let table = HarnessComparison(scenario: Self.scenario, reports: [local, remote, adaptive], settle: 5, lostPenalty: 2000)
        let markdown = table.markdown
        #expect(markdown.contains("| 0–10 s |"))
        #expect(markdown.contains("20.0 / 20.0 (0)"), "\(markdown)")
        #expect(markdown.contains("2000.0 / 2000.0 (50)"), "lost requests count as the timeout, settle time left out: \(markdown)")
        #expect(markdown.contains("81.0 / 81.0 (0)"), "the 500 ms requests fall in the settle time: \(markdown)")
        #expect(table.verdict.hasPrefix("within 10% of the best fixed mode in every phase"), "\(table.verdict)")
        #expect(table.verdict.contains("not better than local"), "the whole run's p95 is set by the slow start of the outage")
    }

    @Test func aSlowPhaseIsNamedWithItsNumbers() {
        let local = Self.run("local") { _ in 80 }
        let remote = Self.run("split") { $0 < 10 ? 20 : nil }
        let adaptive = Self.run("adaptive") { time in time < 10 ? 30 : 81 }
        let verdict = HarnessComparison(scenario: Self.scenario, reports: [local, remote, adaptive], settle: 5, lostPenalty: 2000).verdict
        #expect(verdict.contains("0–10 s: 30.0 / 30.0 ms vs best 20.0 / 20.0"), "\(verdict)")
    }

    /// The first 5 s of the run are left out like those after a change: the agents' first
    /// requests, made before the policy has measured anything, do not count against it.
    @Test func theStartOfTheRunIsLeftOut() {
        let local = Self.run("local") { _ in 80 }
        let remote = Self.run("split") { $0 < 10 ? 20 : nil }
        let adaptive = Self.run("adaptive") { time in time < 5 ? 900 : (time < 10 ? 21 : 81) }
        let table = HarnessComparison(scenario: Self.scenario, reports: [local, remote, adaptive], settle: 5, lostPenalty: 2000)
        #expect(table.verdict.hasPrefix("within 10% of the best fixed mode in every phase"), "\(table.verdict)")
        #expect(
            table.markdown.contains("| 0–10 s | up 10.0 Mbit/s / down 10.0 Mbit/s, 0 ms | 80.0 / 80.0 (0) | 20.0 / 20.0 (0) | 21.0 / 21.0 (0) |"),
            "\(table.markdown)")
    }

    /// When one fixed mode is best in every phase, the whole run may be at most 1% above it
    /// (there is nothing to win by switching); when the best mode changes, the policy must
    /// beat every fixed mode.
    @Test func theWholeRunGoalDependsOnWhetherTheBestModeChanges() {
        let local = Self.run("local") { _ in 10 }
        let remote = Self.run("split") { $0 < 10 ? 20 : nil }
        let close = HarnessComparison(
            scenario: Self.scenario, reports: [local, remote, Self.run("adaptive") { _ in 10.05 }], settle: 5, lostPenalty: 2000)
        #expect(close.verdict.contains("one fixed mode (local) is best throughout, and the whole run is within 1% of it"), "\(close.verdict)")
        let off = HarnessComparison(
            scenario: Self.scenario, reports: [local, remote, Self.run("adaptive") { _ in 10.5 }], settle: 5, lostPenalty: 2000)
        #expect(off.verdict.contains("more than 1% above it (mean 10.5 vs 10.0"), "\(off.verdict)")
        // Split best first, local after: beating both is the goal.
        let switching = HarnessComparison(
            scenario: Self.scenario,
            reports: [Self.run("local") { _ in 80 }, remote, Self.run("adaptive") { $0 < 10 ? 20.5 : 79.5 }], settle: 5, lostPenalty: 2000)
        #expect(switching.bestFixedPerPhase == ["split", "local"])
        #expect(switching.verdict.contains("the best fixed mode changes and the whole run is better than every fixed mode's"), "\(switching.verdict)")
    }
}
