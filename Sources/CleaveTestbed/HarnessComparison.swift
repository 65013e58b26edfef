import CleaveNetem
import CleaveSupport
import Foundation

/// Fixed modes and the adaptive policy side by side, phase by phase (Neurosurgeon-style).
///
/// A phase is the time between two steps of the reference link's timeline; the first
/// `settle` seconds of the run and after each change are left out. A lost request counts
/// with the timeout as its latency, so that losing requests never looks fast.
///
/// The adaptive policy's goal (``verdict``): in every phase its mean and p95 within 10% of
/// the best fixed mode's; over the whole run at most 1% above the best fixed mode, and
/// below every fixed mode when the best fixed mode is not the same in every phase (there
/// switching is the point).
public struct HarnessComparison: Sendable {
    public let scenario: Scenario
    public let reports: [HarnessReport]
    public let link: String
    /// Seconds left out at the start of the run and after each change of conditions.
    public let settle: Double
    /// Latency charged for a lost request, milliseconds.
    public let lostPenalty: Double

    public init(scenario: Scenario, reports: [HarnessReport], link: String = "a1", settle: Double = 5, lostPenalty: Double) {
        self.scenario = scenario
        self.reports = reports
        self.link = link
        self.settle = settle
        self.lostPenalty = lostPenalty
    }

    /// (mean, p95, lost) of the records in a time window.
    func statistics(_ records: [RequestRecord], from start: Double, to end: Double) -> (mean: Double, p95: Double, lost: Int, count: Int) {
        let window = records.filter { $0.time >= start && $0.time < end }
        let latencies = SampleStatistics(window.map { $0.answered ? $0.latencyMilliseconds : lostPenalty })
        guard latencies.count > 0 else { return (.nan, .nan, 0, 0) }
        return (latencies.mean, latencies.percentile(0.95), window.filter { !$0.answered }.count, window.count)
    }

    /// The phases of the reference link, in seconds, with a description of each.
    var phases: [(start: Double, end: Double, label: String)] {
        let steps = scenario.timeline(for: link)
        return steps.enumerated().map { index, step in
            let end = index + 1 < steps.count ? steps[index + 1].at / 1000 : scenario.duration / 1000
            return (step.at / 1000, end, ScenarioPlayer.describe(step))
        }
    }

    /// A Markdown table: one row per phase and one for the whole run; per run "mean / p95 ms (lost)".
    public var markdown: String {
        var lines = [
            "| phase | conditions | " + reports.map(\.run).joined(separator: " | ") + " |",
            "|---|---|" + String(repeating: "---:|", count: reports.count),
        ]
        for phase in phases {
            let start = phase.start + settle
            let cells = reports.map { report -> String in
                let s = statistics(report.records, from: start, to: phase.end)
                return s.count == 0 ? "–" : String(format: "%.1f / %.1f (%d)", s.mean, s.p95, s.lost)
            }
            lines.append(String(format: "| %.0f–%.0f s | ", phase.start, phase.end) + phase.label + " | " + cells.joined(separator: " | ") + " |")
        }
        let whole = reports.map { report -> String in
            let s = statistics(report.records, from: 0, to: .infinity)
            return String(format: "**%.1f / %.1f (%d)**", s.mean, s.p95, s.lost)
        }
        lines.append("| whole run | | " + whole.joined(separator: " | ") + " |")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The best fixed run's name in each phase (by mean; phases without requests left out).
    var bestFixedPerPhase: [String] {
        let fixed = reports.filter { $0.run != "adaptive" }
        return phases.compactMap { phase in
            fixed.map { ($0.run, statistics($0.records, from: phase.start + settle, to: phase.end).mean) }.filter { !$0.1.isNaN }
                .min { $0.1 < $1.1 }?.0
        }
    }

    /// Whether the run named `adaptive` meets the goal (see the type's description), and where not.
    public var verdict: String {
        guard let adaptive = reports.first(where: { $0.run == "adaptive" }) else { return "no adaptive run" }
        let fixed = reports.filter { $0.run != "adaptive" }
        var misses: [String] = []
        for phase in phases {
            let start = phase.start + settle
            let ours = statistics(adaptive.records, from: start, to: phase.end)
            guard ours.count > 0 else { continue }
            let bestMean = fixed.map { statistics($0.records, from: start, to: phase.end).mean }.filter { !$0.isNaN }.min() ?? .nan
            let bestP95 = fixed.map { statistics($0.records, from: start, to: phase.end).p95 }.filter { !$0.isNaN }.min() ?? .nan
            if ours.mean > bestMean * 1.1 || ours.p95 > bestP95 * 1.1 {
                misses.append(
                    String(format: "%.0f–%.0f s: %.1f / %.1f ms vs best %.1f / %.1f", phase.start, phase.end, ours.mean, ours.p95, bestMean, bestP95))
            }
        }
        var text =
            misses.isEmpty
            ? "within 10% of the best fixed mode in every phase" : "more than 10% off the best fixed mode in " + misses.joined(separator: "; ")
        let overall = statistics(adaptive.records, from: 0, to: .infinity)
        let whole = fixed.map { ($0.run, statistics($0.records, from: 0, to: .infinity)) }
        let switching = Set(bestFixedPerPhase).count > 1
        if switching {
            // The best fixed mode changes from phase to phase: the policy must beat them all.
            let notBeaten = whole.filter { !(overall.mean < $0.1.mean && overall.p95 < $0.1.p95) }.map { run, s in
                String(format: "%@ (mean %.1f vs %.1f, p95 %.1f vs %.1f ms)", run, overall.mean, s.mean, overall.p95, s.p95)
            }
            text +=
                notBeaten.isEmpty
                ? "; the best fixed mode changes and the whole run is better than every fixed mode's"
                : "; the best fixed mode changes, and the whole run is not better than \(notBeaten.joined(separator: ", "))"
        } else if let best = whole.min(by: { $0.1.mean < $1.1.mean }) {
            let within = overall.mean <= best.1.mean * 1.01 && overall.p95 <= best.1.p95 * 1.01
            text += String(
                format: "; one fixed mode (%@) is best throughout, and the whole run is %@ (mean %.1f vs %.1f, p95 %.1f vs %.1f ms)", best.0,
                within ? "within 1% of it" : "more than 1% above it", overall.mean, best.1.mean, overall.p95, best.1.p95)
        }
        return text
    }
}
