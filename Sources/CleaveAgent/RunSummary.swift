import CleaveDatasets
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import FoundationEssentials

/// Accuracy, bytes and latency percentiles of a run, as one table row.
public struct RunSummary: Sendable {
    /// The fixed mode of the run, nil for adaptive.
    public let mode: InferenceMode?
    public let count: Int
    public let failures: Int
    public let accuracy: Double
    public let bytesPerSample: Double
    public let p50: Double
    public let p95: Double
    public let p99: Double
    public let throughput: Double
    public let meanBatch: Double
    /// The first failure's reason, if any request failed.
    public let firstError: String?

    /// Summarizes `outcomes` against the true `labels` over a run of `seconds`.
    public init(mode: InferenceMode?, outcomes: [AgentOutcome], labels: [UInt8], seconds: Double) {
        self.mode = mode
        count = outcomes.count
        failures = outcomes.filter { $0.prediction == nil }.count
        firstError = outcomes.first { $0.prediction == nil }.map { "request \($0.requestID): \($0.error ?? "no prediction")" }
        let correct = zip(outcomes, labels).filter { $0.0.prediction == Int($0.1) }.count
        accuracy = labels.isEmpty ? .nan : Double(correct) / Double(count)
        bytesPerSample = count > 0 ? Double(outcomes.reduce(0) { $0 + $1.bytesSent }) / Double(count) : 0
        let latencies = SampleStatistics(outcomes.map(\.latencyMilliseconds))
        func percentile(_ p: Double) -> Double { latencies.count == 0 ? 0 : latencies.percentile(p) }
        p50 = percentile(0.50)
        p95 = percentile(0.95)
        p99 = percentile(0.99)
        throughput = seconds > 0 ? Double(count) / seconds : 0
        meanBatch = count > 0 ? Double(outcomes.reduce(0) { $0 + $1.batchSize }) / Double(count) : 0
    }

    /// Column titles for ``line``.
    public static let header = "mode      requests  failed  accuracy  bytes/sample  p50 ms  p95 ms  p99 ms  req/s   mean batch"

    /// The summary as one table row.
    public var line: String {
        let accuracyText = accuracy.isNaN ? "     n/a" : ((accuracy * 100).fixed(2) + "%").aligningRight(8)
        let columns = [
            "\(count)".aligningRight(8), "\(failures)".aligningRight(6), accuracyText, bytesPerSample.fixed(1).aligningRight(12),
            p50.fixed(2).aligningRight(6), p95.fixed(2).aligningRight(6), p99.fixed(2).aligningRight(6), throughput.fixed(0).aligningRight(6),
            meanBatch.fixed(2).aligningRight(10),
        ]
        return (mode?.rawValue ?? "adaptive").aligningLeft(10) + columns.joined(separator: "  ")
            + (firstError.map { "\n  first failure: \($0)" } ?? "")
    }
}

extension Agent {
    /// Serves `samples` inputs from `source` and prints what a user of the agent CLIs sees:
    /// one line per image for folders, a summary line per 1,000 requests, and the final table row.
    /// `stopping` is asked before each request: once it says yes, no new request is sent.
    public func serveAndReport(
        _ source: InputSource, samples: Int, mode: InferenceMode?, rate: Double, stopping: @Sendable () -> Bool = { false }
    ) async throws {
        let run = try await stream(source, samples: samples, mode: mode, rate: rate, stopping: stopping, report: { print($0.line) }) {
            index, outcome in
            guard case .folder(let paths) = source else { return }
            let label = outcome.prediction.map { FashionMNIST.classNames[$0] } ?? "failed: \(outcome.error ?? "")"
            print("\(paths[index % paths.count]) → \(label) (\(outcome.latencyMilliseconds.fixed(1)) ms)")
        }
        print(RunSummary.header)
        print(RunSummary(mode: mode, outcomes: run.outcomes, labels: run.labels, seconds: run.seconds).line)
    }

    /// Sends `samples` inputs from `source` in `mode` (nil: adaptive), at `rate` requests per second (0: back to back),
    /// calling `report` after every 1,000 and `each` after every request; returns the outcomes, the true
    /// labels (empty unless the source has them) and the duration.
    public func stream(
        _ source: InputSource, samples: Int, mode: InferenceMode?, rate: Double, stopping: @Sendable () -> Bool = { false },
        report: (RunSummary) -> Void = { _ in },
        each: (Int, AgentOutcome) -> Void = { _, _ in }
    ) async throws -> (outcomes: [AgentOutcome], labels: [UInt8], seconds: Double) {
        var outcomes: [AgentOutcome] = []
        var labels: [UInt8] = []
        var inputs = source.makeIterator()
        let started = ContinuousClock.now
        for index in 0..<samples {
            if stopping() { break }
            let (input, label, _) = try inputs.next()
            if let label { labels.append(label) }
            let outcome = if let mode { await infer(input, mode: mode) } else { await infer(input) }
            outcomes.append(outcome)
            each(index, outcome)
            if rate > 0 {
                let due = started + .milliseconds(Int(Double(index + 1) * 1000 / rate))
                if due > .now { try await Task.sleep(until: due) }
            }
            if (index + 1) % 1000 == 0 {
                report(RunSummary(mode: mode, outcomes: outcomes, labels: labels, seconds: (ContinuousClock.now - started).seconds))
            }
        }
        return (outcomes, labels, (ContinuousClock.now - started).seconds)
    }
}
