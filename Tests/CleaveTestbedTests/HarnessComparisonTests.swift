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
}
