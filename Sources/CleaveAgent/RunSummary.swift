import CleaveProtocol
import CleaveTrain
import Foundation

extension Duration {
    /// The duration in seconds.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Accuracy, bytes and latency percentiles of a run, as one table row.
public struct RunSummary: Sendable {
    public let mode: InferenceMode
    public let count: Int
    public let failures: Int
    public let accuracy: Double
    public let bytesPerSample: Double
    public let p50: Double
    public let p95: Double
    public let p99: Double
    public let throughput: Double
    public let meanBatch: Double

    /// Summarizes `outcomes` against the true `labels` over a run of `seconds`.
    public init(mode: InferenceMode, outcomes: [AgentOutcome], labels: [UInt8], seconds: Double) {
        self.mode = mode
        count = outcomes.count
        failures = outcomes.filter { $0.prediction == nil }.count
        let correct = zip(outcomes, labels).filter { $0.0.prediction == Int($0.1) }.count
        accuracy = count > 0 ? Double(correct) / Double(count) : 0
        bytesPerSample = count > 0 ? Double(outcomes.reduce(0) { $0 + $1.bytesSent }) / Double(count) : 0
        let latencies = outcomes.map(\.latencyMilliseconds).sorted()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int((Double(latencies.count) * p).rounded(.up)) - 1)]
        }
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
        mode.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)
            + String(
                format: "%8d  %6d  %7.2f%%  %12.1f  %6.2f  %6.2f  %6.2f  %6.0f  %10.2f", count, failures, accuracy * 100, bytesPerSample, p50, p95,
                p99, throughput, meanBatch)
    }
}

extension Agent {
    /// Sends `samples` Fashion-MNIST test images in `mode`, at `rate` requests per second
    /// (0: back to back), calling `report` after every 1,000; returns the outcomes and the true labels.
    public func stream(
        _ test: FashionMNIST, samples: Int, mode: InferenceMode, rate: Double, report: (RunSummary) -> Void = { _ in }
    ) async throws -> (outcomes: [AgentOutcome], labels: [UInt8], seconds: Double) {
        var outcomes: [AgentOutcome] = []
        var labels: [UInt8] = []
        let started = ContinuousClock.now
        for index in 0..<samples {
            let sample = index % test.count
            outcomes.append(await infer(test.image(sample), mode: mode))
            labels.append(test.labels[sample])
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
