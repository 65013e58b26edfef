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
        _ source: InputSource, samples: Int, mode: InferenceMode?, rate: Double, inFlight: Int = 1, stopping: @Sendable () -> Bool = { false }
    ) async throws {
        let run = try await stream(
            source, samples: samples, mode: mode, rate: rate, inFlight: inFlight, stopping: stopping, report: { print($0.line) }
        ) {
            index, outcome in
            guard case .folder(let paths) = source else { return }
            let label = outcome.prediction.map { FashionMNIST.classNames[$0] } ?? "failed: \(outcome.error ?? "")"
            print("\(paths[index % paths.count]) → \(label) (\(outcome.latencyMilliseconds.fixed(1)) ms)")
        }
        print(RunSummary.header)
        print(RunSummary(mode: mode, outcomes: run.outcomes, labels: run.labels, seconds: run.seconds).line)
        let fallbacks = run.outcomes.filter { $0.fallback != nil }.count
        let answered = run.outcomes.filter { $0.prediction != nil }
        let remote = answered.filter { $0.fallback == nil && $0.mode != .local }.count
        print("answered \(answered.count): \(remote) remotely, \(answered.count - remote) locally (\(fallbacks) fallbacks from remote requests)")
    }

    /// Sends `samples` inputs from `source` in `mode` (nil: adaptive), at `rate` requests per second (0: back to back),
    /// at most `inFlight` at a time (1: each waits for the one before), calling `report` after every 1,000 and `each`
    /// after every request (in the order they finish); returns the outcomes in input order, the true labels (empty
    /// unless the source has them) and the duration.
    public func stream(
        _ source: InputSource, samples: Int, mode: InferenceMode?, rate: Double, inFlight: Int = 1, stopping: @Sendable () -> Bool = { false },
        report: (RunSummary) -> Void = { _ in },
        each: (Int, AgentOutcome) -> Void = { _, _ in }
    ) async throws -> (outcomes: [AgentOutcome], labels: [UInt8], seconds: Double) {
        var outcomes: [AgentOutcome?] = []
        var labels: [UInt8] = []
        var inputs = source.makeIterator()
        let started = ContinuousClock.now
        var finished = 0
        try await withThrowingTaskGroup(of: (Int, AgentOutcome).self) { group in
            var running = 0
            var index = 0
            while index < samples || running > 0 {
                // Take a finished request when the window is full, when inputs are done, or
                // (one in flight) after every request.
                if running > 0 && (running >= max(1, inFlight) || index >= samples || stopping()) {
                    guard let (done, outcome) = try await group.next() else { break }
                    running -= 1
                    outcomes[done] = outcome
                    finished += 1
                    each(done, outcome)
                    if finished % 1000 == 0 {
                        report(
                            RunSummary(
                                mode: mode, outcomes: outcomes.compactMap { $0 }, labels: labels, seconds: (ContinuousClock.now - started).seconds))
                    }
                    continue
                }
                if stopping() || index >= samples { break }
                let (input, label, _) = try inputs.next()
                if let label { labels.append(label) }
                outcomes.append(nil)
                let number = index
                group.addTask {
                    if let mode { return (number, await self.infer(input, mode: mode)) }
                    return (number, await self.infer(input))
                }
                running += 1
                index += 1
                if rate > 0 {
                    let due = started + .milliseconds(Int(Double(index) * 1000 / rate))
                    if due > .now { try await Task.sleep(until: due) }
                }
            }
        }
        let sent = outcomes.compactMap { $0 }
        return (sent, Array(labels.prefix(sent.count)), (ContinuousClock.now - started).seconds)
    }
}
