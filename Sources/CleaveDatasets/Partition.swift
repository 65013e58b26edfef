import CleaveSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How a labelled data set is split among the boards of a federated fleet, each board
/// keeping only its own share (Li et al., "Federated Learning on Non-IID Data Silos").
public enum Partition: Sendable, Equatable {
    /// Shuffled, then cut into equal shares.
    case iid
    /// Label skew: for each class, the parties' shares of its samples are drawn from
    /// Dir(α); small α gives each party few classes (α = 0.5 is niid-bench's setting).
    case dirichletLabels(alpha: Double)
    /// Quantity skew: the parties' sizes are drawn from Dir(α), the samples IID.
    case dirichletQuantity(alpha: Double)

    /// Sample indices for each of `parties` parties, seeded: the same arguments give the
    /// same split on every machine. Every sample goes to exactly one party.
    public func split(labels: [UInt8], parties: Int, seed: UInt64) throws -> [[Int]] {
        guard parties >= 1 else { throw DatasetError(description: "a partition needs at least one party, got \(parties)") }
        var generator = SeededGenerator(seed: seed)
        switch self {
        case .iid:
            let order = Array(labels.indices).shuffled(using: &generator)
            return Self.cut(order, proportions: [Double](repeating: 1, count: parties))
        case .dirichletLabels(let alpha):
            try Self.check(alpha)
            var shares = [[Int]](repeating: [], count: parties)
            for label in Set(labels).sorted() {
                let members = labels.indices.filter { labels[$0] == label }.shuffled(using: &generator)
                let proportions = Self.dirichlet(alpha: alpha, count: parties, using: &generator)
                for (party, part) in Self.cut(members, proportions: proportions).enumerated() { shares[party] += part }
            }
            return shares.map { $0.sorted() }
        case .dirichletQuantity(let alpha):
            try Self.check(alpha)
            let order = Array(labels.indices).shuffled(using: &generator)
            return Self.cut(order, proportions: Self.dirichlet(alpha: alpha, count: parties, using: &generator)).map { $0.sorted() }
        }
    }

    private static func check(_ alpha: Double) throws {
        guard alpha > 0, alpha.isFinite else { throw DatasetError(description: "Dirichlet α must be positive and finite, got \(alpha)") }
    }

    /// Consecutive pieces of `items` with sizes in proportion (rounded so that they add up).
    static func cut(_ items: [Int], proportions: [Double]) -> [[Int]] {
        let total = proportions.reduce(0, +)
        var pieces: [[Int]] = []
        var start = 0
        var cumulative = 0.0
        for (index, proportion) in proportions.enumerated() {
            cumulative += proportion
            let end = index == proportions.count - 1 ? items.count : min(items.count, Int((cumulative / total * Double(items.count)).rounded()))
            pieces.append(Array(items[start..<max(start, end)]))
            start = max(start, end)
        }
        return pieces
    }

    /// A draw from the symmetric Dirichlet distribution Dir(α, …, α) of `count` components.
    static func dirichlet(alpha: Double, count: Int, using generator: inout SeededGenerator) -> [Double] {
        let draws = (0..<count).map { _ in gamma(shape: alpha, using: &generator) }
        let sum = draws.reduce(0, +)
        return sum > 0 ? draws.map { $0 / sum } : [Double](repeating: 1 / Double(count), count: count)
    }

    /// A Gamma(shape, 1) sample (Marsaglia and Tsang; shape < 1 boosted by U^(1/shape)).
    static func gamma(shape: Double, using generator: inout SeededGenerator) -> Double {
        if shape < 1 {
            return gamma(shape: shape + 1, using: &generator) * pow(max(generator.uniform(), 1e-300), 1 / shape)
        }
        let d = shape - 1.0 / 3
        let c = 1 / (9 * d).squareRoot()
        while true {
            let x = generator.normal()
            let v = pow(1 + c * x, 3)
            guard v > 0 else { continue }
            let u = generator.uniform()
            if log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * log(v) { return d * v }
        }
    }
}
