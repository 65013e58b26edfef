import CleaveSupport
import Testing

@testable import CleaveDatasets

@Suite struct PartitionTests {
    let labels: [UInt8] = (0..<6000).map { UInt8($0 % 10) }

    func checkCovers(_ shares: [[Int]]) {
        let all = shares.flatMap { $0 }
        #expect(all.count == labels.count)
        #expect(Set(all).count == labels.count, "every sample in exactly one share")
    }

    @Test func iidSharesAreEqualAndMixed() throws {
        let shares = try Partition.iid.split(labels: labels, parties: 7, seed: 1)
        checkCovers(shares)
        #expect(shares.allSatisfy { abs($0.count - 6000 / 7) <= 1 })
        for share in shares { #expect(Set(share.map { labels[$0] }).count == 10) }
        #expect(try Partition.iid.split(labels: labels, parties: 7, seed: 1) == shares, "seeded")
        #expect(try Partition.iid.split(labels: labels, parties: 7, seed: 2) != shares)
    }

    @Test func dirichletLabelSkewConcentratesClasses() throws {
        let skewed = try Partition.dirichletLabels(alpha: 0.1).split(labels: labels, parties: 10, seed: 3)
        let mild = try Partition.dirichletLabels(alpha: 100).split(labels: labels, parties: 10, seed: 3)
        checkCovers(skewed)
        checkCovers(mild)
        // The share of a party's largest class: near 1/10 for large α, far above it for small α.
        func dominance(_ shares: [[Int]]) -> Double {
            let fractions = shares.filter { !$0.isEmpty }.map { share -> Double in
                var counts = [Int](repeating: 0, count: 10)
                for index in share { counts[Int(labels[index])] += 1 }
                return Double(counts.max()!) / Double(share.count)
            }
            return fractions.reduce(0, +) / Double(fractions.count)
        }
        #expect(dominance(skewed) > 0.5)
        #expect(dominance(mild) < 0.2)
    }

    @Test func quantitySkewVariesSizes() throws {
        let shares = try Partition.dirichletQuantity(alpha: 0.5).split(labels: labels, parties: 10, seed: 5)
        checkCovers(shares)
        let sizes = shares.map(\.count)
        #expect(sizes.max()! > 2 * sizes.min()!)
    }

    @Test func refusesImpossibleArguments() {
        #expect(throws: DatasetError.self) { try Partition.iid.split(labels: labels, parties: 0, seed: 1) }
        #expect(throws: DatasetError.self) { try Partition.dirichletLabels(alpha: 0).split(labels: labels, parties: 3, seed: 1) }
    }

    @Test func gammaHasItsMean() {
        var generator = SeededGenerator(seed: 9)
        for shape in [0.3, 1.0, 4.0] {
            let mean = (0..<20_000).map { _ in Partition.gamma(shape: shape, using: &generator) }.reduce(0, +) / 20_000
            #expect(abs(mean - shape) < 0.05 * max(shape, 1), "Gamma(\(shape)) mean \(mean)")
        }
    }
}
