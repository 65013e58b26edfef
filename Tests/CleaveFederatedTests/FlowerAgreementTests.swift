import CleaveONNX
import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveFederated

private let flowerInstalled: Bool = {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", "import flwr"]
    process.standardError = FileHandle.nullDevice
    do {
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus == 0
    } catch {
        return false
    }
}()

/// The same client models aggregated by our strategies and by Flower's (`flwr` from PyPI,
/// `bench/flower_aggregate.py`) agree within float rounding.
@Suite struct FlowerAgreementTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path
    static let shapes = [[6, 5], [6], [3, 2, 2]]

    @Test(.enabled(if: flowerInstalled, "install flwr (scripts/install-deps.sh does)"))
    func aggregatesMatchFlowers() throws {
        var generator = SeededGenerator(seed: 7)
        let layout = WeightLayout(Self.shapes.enumerated().map { ("layer\($0.offset)", $0.element) })
        let global = (0..<layout.count).map { _ in Float(generator.normal() * 0.3) }
        // Eight clients around the global model (an even count: the median averages two), with
        // unequal sizes and spreads; the last one an outlier.
        var clients: [(examples: Int, weights: [Float])] = (0..<7).map { client in
            (examples: 50 + 37 * client, weights: global.map { $0 + Float(generator.normal() * 0.02 * Double(client + 1)) })
        }
        clients.append((examples: 400, weights: global.map { $0 + Float(generator.normal() * 2) }))

        let directory = try SystemCall.makeTemporaryDirectory(prefix: "cleave-flower")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func write(_ values: [Float], _ prefix: String) throws -> [String] {
            try layout.entries.enumerated().map { index, entry in
                let name = "\(prefix)_\(index).npy"
                try TensorFile.writeNPY(Tensor(shape: entry.shape, scalars: Array(values[entry.range])), to: "\(directory)/\(name)")
                return name
            }
        }
        let strategies: [(flower: String, ours: any RoundAggregator)] = [
            ("fedavg", FederatedAveraging()), ("fedprox", try StrategyChoice.fedProx(mu: 0.01).roundAggregator()),
            ("fedmedian", CoordinateMedian()), ("trimmed-mean:0.2", try TrimmedMean(beta: 0.2)),
            ("krum:2:0", try Krum(malicious: 2)), ("krum:1:3", try Krum(malicious: 1, keep: 3)),
            ("fedadam:0.1", FederatedAdam(learningRate: 0.1)),
        ]
        let manifest: [String: Any] = [
            "global": try write(global, "global"),
            "clients": try clients.enumerated().map {
                ["examples": $0.element.examples, "layers": try write($0.element.weights, "client\($0.offset)")]
            },
            "strategies": strategies.map(\.flower),
        ]
        try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: "\(directory)/manifest.json"))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "\(Self.repository)/bench/flower_aggregate.py", directory]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "bench/flower_aggregate.py failed")

        let updates = clients.enumerated().map { index, client in
            ClientUpdate(client: index, examples: client.examples, delta: zip(client.weights, global).map { $0 - $1 }, baseVersion: 0)
        }
        for (flower, strategy) in strategies {
            var aggregator = strategy
            let ours = try aggregator.aggregate(global: global, updates: updates, round: 1)
            var theirs: [Float] = []
            for index in layout.entries.indices {
                theirs += try TensorFile.read("\(directory)/\(flower.replacingOccurrences(of: ":", with: "_"))_\(index).npy").tensor.scalars(
                    as: Float.self)
            }
            try #require(theirs.count == ours.count, "\(flower): Flower returned \(theirs.count) values")
            let worst = zip(ours, theirs).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            #expect(worst <= 2e-6, "\(flower): largest difference from Flower \(worst)")
            // Not trivially equal: the strategies differ from one another on these updates.
            if flower != "fedavg" && flower != "fedprox" {
                let fedAvg = try FederatedAveraging().aggregate(global: global, updates: updates, round: 1)
                #expect(zip(ours, fedAvg).contains { abs($0 - $1) > 1e-3 }, "\(flower) gave FedAvg's answer")
            }
        }
    }
}
