import CleaveNetem
import CleaveSupport
import Foundation

/// One request of a harness run.
public struct RequestRecord: Sendable, Equatable {
    /// Seconds from the start of the scenario.
    public var time: Double
    public var agent: String
    /// The mode the request was sent in (`local`, `split`, `offload`).
    public var mode: String
    /// Bytes published for the request.
    public var bytes: Int
    public var latencyMilliseconds: Double
    /// `ok`, `wrong` (answered, wrong class), `timeout` or `error: …`.
    public var outcome: String

    public init(time: Double, agent: String, mode: String, bytes: Int, latencyMilliseconds: Double, outcome: String) {
        self.time = time
        self.agent = agent
        self.mode = mode
        self.bytes = bytes
        self.latencyMilliseconds = latencyMilliseconds
        self.outcome = outcome
    }

    /// Whether an answer came back (remotely, or locally after a remote failure).
    public var answered: Bool { outcome.hasPrefix("ok") || outcome.hasPrefix("wrong") }
}

/// CSV, summary and SVG plot of a harness run.
public struct HarnessReport: Sendable {
    public let scenario: Scenario
    /// The run's label (the fixed mode, or `adaptive`).
    public let run: String
    public let records: [RequestRecord]
    /// Link whose capacity the plot shades.
    public let link: String
    /// Timeline times are multiplied by this (the harness can compress a scenario).
    public let timeScale: Double

    public init(scenario: Scenario, run: String, records: [RequestRecord], link: String, timeScale: Double = 1) {
        self.scenario = scenario
        self.run = run
        self.records = records
        self.link = link
        self.timeScale = timeScale
    }

    public static let csvHeader = "time_s,agent,mode,bytes,latency_ms,outcome"

    /// One line per request under ``csvHeader``.
    public var csv: String {
        ([Self.csvHeader]
            + records.map {
                String(
                    format: "%.3f,%@,%@,%d,%.2f,%@", $0.time, $0.agent, $0.mode, $0.bytes, $0.latencyMilliseconds,
                    $0.outcome.replacing(",", with: ";"))
            }).joined(separator: "\n") + "\n"
    }

    /// Requests, answered, lost, p50/p95 latency of the answered ones, mean bytes.
    public var summaryLine: String {
        let answered = records.filter(\.answered)
        let latencies = SampleStatistics(answered.map(\.latencyMilliseconds))
        func percentile(_ p: Double) -> Double { latencies.percentile(p) }
        let bytes = records.isEmpty ? 0 : Double(records.reduce(0) { $0 + $1.bytes }) / Double(records.count)
        let correct = records.filter { $0.outcome.hasPrefix("ok") }.count
        return String(
            format: "%-10@ %8d %8d %6d %8.2f%% %9.1f %9.1f %10.1f", run as NSString, records.count, answered.count,
            records.count - answered.count, answered.isEmpty ? 0 : Double(correct) / Double(answered.count) * 100, percentile(0.5),
            percentile(0.95), bytes)
    }

    public static let summaryHeader = "run        requests answered   lost  accuracy    p50 ms    p95 ms  bytes/req"

    // MARK: - Plot

    /// Latency of every request over time (log scale), coloured by mode, lost requests marked
    /// at the top, with the link's rate as a shaded band and outages in grey.
    public var svg: String {
        let width = 900.0
        let height = 420.0
        let left = 70.0
        let right = 20.0
        let top = 40.0
        let bottom = 50.0
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let duration = scenario.duration / 1000 * timeScale
        let maxLatency = max(100, (records.map(\.latencyMilliseconds).max() ?? 100) * 1.2)
        let minLatency = 0.1
        func x(_ t: Double) -> Double { left + min(max(t / duration, 0), 1) * plotWidth }
        func y(_ ms: Double) -> Double {
            let v = (log10(max(ms, minLatency)) - log10(minLatency)) / (log10(maxLatency) - log10(minLatency))
            return top + (1 - v) * plotHeight
        }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="20" font-size="14">\(escape(scenario.name)) — \(escape(run)): latency per request; shaded: link \(escape(link)) uplink rate</text>

            """
        // Link capacity (log of rate, 10 kbit/s … 100 Mbit/s) and outages behind the points.
        let steps = scenario.timeline(for: link)
        for (index, step) in steps.enumerated() {
            let start = step.at / 1000 * timeScale
            let end = index + 1 < steps.count ? steps[index + 1].at / 1000 * timeScale : duration
            if !step.uplink.up {
                svg += "<rect x=\"\(x(start))\" y=\"\(top)\" width=\"\(x(end) - x(start))\" height=\"\(plotHeight)\" fill=\"#dddddd\"/>\n"
                svg += "<text x=\"\(x(start) + 4)\" y=\"\(top + 14)\" fill=\"#666\">down (\(step.uplink.outage.rawValue))</text>\n"
                continue
            }
            let rate = step.uplinkTrace?.meanRate ?? step.uplink.rate ?? 1e9
            let fraction = min(max((log10(rate) - 4) / 4, 0.02), 1)
            let bandHeight = fraction * plotHeight
            svg +=
                "<rect x=\"\(x(start))\" y=\"\(top + plotHeight - bandHeight)\" width=\"\(x(end) - x(start))\" height=\"\(bandHeight)\" fill=\"#e8f0fb\"/>\n"
            svg += "<text x=\"\(x(start) + 4)\" y=\"\(top + plotHeight - bandHeight + 14)\" fill=\"#5577aa\">\(ScenarioPlayer.format(rate))</text>\n"
        }
        // Axes.
        svg += "<line x1=\"\(left)\" y1=\"\(top + plotHeight)\" x2=\"\(left + plotWidth)\" y2=\"\(top + plotHeight)\" stroke=\"black\"/>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + plotHeight)\" stroke=\"black\"/>\n"
        var tick = minLatency
        while tick <= maxLatency {
            svg += "<line x1=\"\(left - 4)\" y1=\"\(y(tick))\" x2=\"\(left + plotWidth)\" y2=\"\(y(tick))\" stroke=\"#eeeeee\"/>\n"
            svg += "<text x=\"\(left - 8)\" y=\"\(y(tick) + 4)\" text-anchor=\"end\">\(tick >= 1 ? String(Int(tick)) : String(tick)) ms</text>\n"
            tick *= 10
        }
        let step = max(1, (duration / 10).rounded())
        var t = 0.0
        while t <= duration {
            svg += "<text x=\"\(x(t))\" y=\"\(top + plotHeight + 18)\" text-anchor=\"middle\">\(Int(t)) s</text>\n"
            t += step
        }
        svg += "<text x=\"\(left)\" y=\"\(height - 10)\">time since the start of the scenario</text>\n"
        // Requests.
        let colours = ["local": "#2a9d3a", "split": "#1f5fbf", "offload": "#d9822b"]
        for record in records {
            if record.answered {
                svg +=
                    "<circle cx=\"\(x(record.time))\" cy=\"\(y(record.latencyMilliseconds))\" r=\"2\" fill=\"\(colours[record.mode] ?? "#777")\"/>\n"
            } else {
                svg += "<text x=\"\(x(record.time))\" y=\"\(top - 4)\" fill=\"#cc0000\" text-anchor=\"middle\">×</text>\n"
            }
        }
        var legend = left + plotWidth - 260
        for (mode, colour) in colours.sorted(by: { $0.key < $1.key }) {
            svg +=
                "<circle cx=\"\(legend)\" cy=\"\(height - 14)\" r=\"4\" fill=\"\(colour)\"/><text x=\"\(legend + 8)\" y=\"\(height - 10)\">\(mode)</text>\n"
            legend += 65
        }
        svg += "<text x=\"\(legend)\" y=\"\(height - 10)\" fill=\"#cc0000\">× lost</text>\n"
        return svg + "</svg>\n"
    }

    private func escape(_ text: String) -> String {
        text.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
    }
}
