#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Summary statistics of a sample: what benchmarks, run summaries and harness reports print.
public struct SampleStatistics: Sendable, Equatable {
    /// The values, ascending.
    public let sorted: [Double]

    /// Statistics of `values` (any order; NaNs are kept and sort last).
    public init(_ values: some Sequence<Double>) {
        sorted = values.sorted { $0 < $1 || (!$0.isNaN && $1.isNaN) }
    }

    public var count: Int { sorted.count }

    /// The arithmetic mean, NaN when empty.
    public var mean: Double { sorted.isEmpty ? .nan : sorted.reduce(0, +) / Double(sorted.count) }

    /// The middle value, or the mean of the two middle ones; NaN when empty.
    public var median: Double {
        guard !sorted.isEmpty else { return .nan }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// The nearest-rank percentile (`p` in 0…1): the smallest value with at least a fraction `p`
    /// of the sample at or below it; NaN when empty.
    public func percentile(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((Double(sorted.count) * p).rounded(.up)) - 1
        return sorted[min(sorted.count - 1, max(0, rank))]
    }
}

/// Reading a classifier's logits.
public enum Classification {
    /// The index of the largest value (the first of equal ones), nil when empty.
    @inlinable
    public static func argmax(_ values: some Collection<Float>) -> Int? {
        var best: Int?
        var bestValue = -Float.infinity
        for (index, value) in values.enumerated() where best == nil || value > bestValue {
            best = index
            bestValue = value
        }
        return best
    }

    /// The predicted class and its softmax probability; (0, 0) for no logits.
    public static func top(_ logits: [Float]) -> (index: Int, probability: Float) {
        guard let best = argmax(logits) else { return (0, 0) }
        let sum = logits.reduce(Float(0)) { $0 + expf($1 - logits[best]) }
        return (best, 1 / sum)
    }
}
