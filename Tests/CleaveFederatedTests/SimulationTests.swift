import CleaveDatasets
import Testing

@testable import CleaveFederated

/// Small federated runs on real Fashion-MNIST (the first 1,600 training and 500 test images).
@Suite struct SimulationTests {
    static let data: (train: FashionMNIST, test: FashionMNIST)? = {
        guard let train = try? FashionMNIST(split: .train), let test = try? FashionMNIST(split: .test) else { return nil }
        return (train.prefix(1600), test.prefix(500))
    }()

    func settings(_ strategy: StrategyChoice) -> FederatedSettings {
        var settings = FederatedSettings()
        settings.strategy = strategy
        settings.clients = 4
        settings.partition = .iid
        settings.rounds = 2
        settings.local = LocalTraining(epochs: 1, batchSize: 32, learningRate: 0.05)
        settings.boards = [SimulatedBoard(name: "slow", gflops: 1), SimulatedBoard(name: "fast", gflops: 10)]
        settings.seed = 3
        return settings
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"))
    func fedAvgLearnsAndIsReproducible() throws {
        let (train, test) = try #require(Self.data)
        let first = try FederatedSimulation(settings: settings(.fedAvg), train: train, test: test, threads: 2).run()
        let again = try FederatedSimulation(settings: settings(.fedAvg), train: train, test: test, threads: 1).run()
        #expect(first == again, "the same seed gave another run (threads 2 against 1)")
        #expect(first.count == 2)
        let accuracy = try #require(first.last?.accuracy)
        #expect(accuracy > 0.35, "two rounds on 1,600 images reached only \(accuracy) (chance is 0.10)")
        // Each round waits for the slow board: emulated time is twice its update time.
        let simulation = try FederatedSimulation(settings: settings(.fedAvg), train: train, test: test, threads: 1)
        let slowest = (0..<4).map { simulation.updateSeconds(client: $0) }.max()!
        #expect(abs(first[1].time - 2 * slowest) < 1e-9)
        // Two rounds of four float32 update frames: 4 bytes a value plus the frame's header and checksum.
        let zeros = [Float](repeating: 0, count: simulation.layout.count)
        let frames = simulation.shares.map {
            UpdateCodec.encode(
                ClientUpdate(client: 0, examples: $0.count, delta: zeros, baseVersion: 0), layout: simulation.layout, compression: .float32
            ).count
        }
        #expect(first[1].bytesUp == 2 * frames.reduce(0, +))
        #expect(frames.allSatisfy { $0 < simulation.layout.count * 4 + 24 })
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"))
    func fedBuffAggregatesAsUpdatesArriveWithoutWaitingForTheSlowBoard() throws {
        let (train, test) = try #require(Self.data)
        var buffered = settings(.fedBuff(bufferSize: 2, serverLearningRate: 1))
        buffered.evaluationInterval = 1e9
        let simulation = try FederatedSimulation(settings: buffered, train: train, test: test, threads: 1)
        let records = try simulation.run()
        let fast = simulation.updateSeconds(client: 1)
        let slow = simulation.updateSeconds(client: 0)
        // The two fast clients fill the first buffer long before the slow ones arrive.
        #expect(records.first.map { abs($0.time - fast) < 1e-9 } == true, "first aggregation at \(records.first?.time ?? -1), fast update \(fast)")
        #expect(records.count > 2, "in two slow rounds' time the fast boards alone should fill more than two buffers")
        #expect(records.allSatisfy { $0.updates == 2 })
        #expect(records.last?.accuracy != nil && records.last!.time < 2 * slow)
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"))
    func fedFixAggregatesOnlyOnItsInterval() throws {
        let (train, test) = try #require(Self.data)
        var fixed = settings(.fedFix(interval: 0.05, correctForTime: true))
        fixed.evaluationInterval = 1e9
        let records = try FederatedSimulation(settings: fixed, train: train, test: test, threads: 1).run()
        #expect(records.count >= 2)
        for record in records {
            let intervals = record.time / 0.05
            #expect(abs(intervals - intervals.rounded()) < 1e-6, "aggregation at \(record.time) s is off the 0.05 s grid")
        }
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"))
    func clientsGoneForRoundsAreWaitedForOnlyUntilTheDeadline() throws {
        let (train, test) = try #require(Self.data)
        var gone = settings(.fedAvg)
        gone.rounds = 4
        gone.deadline = 100
        gone.outage = (clients: [0, 1, 2], rounds: 2...3)
        let records = try FederatedSimulation(settings: gone, train: train, test: test, threads: 2).run()
        #expect(records.map(\.updates) == [4, 1, 1, 4])
        #expect(records.map(\.dropped) == [0, 3, 3, 0])
        // A round with missing clients lasts the deadline; the others as long as the slowest board.
        #expect(abs((records[2].time - records[1].time) - 100) < 1e-9)
        #expect(records[3].time - records[2].time < 100)
        #expect(records.last?.accuracy.map { $0 > 0.35 } == true)
        gone.deadline = nil
        #expect(throws: FederatedError("with an outage a synchronous round needs a deadline (--deadline), or it would wait for ever")) {
            try FederatedSimulation(settings: gone, train: train, test: test)
        }
    }

    @Test func settingsOutOfRangeAreRefusedByName() throws {
        let train = try #require(Self.data?.train)
        var bad = settings(.fedAvg)
        bad.dropout = 0.2
        #expect(throws: FederatedError("with dropouts a synchronous round needs a deadline (--deadline), or it would wait for ever")) {
            try FederatedSimulation(settings: bad, train: train, test: train)
        }
        bad = settings(.fedAvg)
        bad.clients = 0
        #expect(throws: FederatedError("a run needs at least one client, got 0")) {
            try FederatedSimulation(settings: bad, train: train, test: train)
        }
        bad = settings(.fedAvg)
        bad.local.epochs = 0
        #expect(throws: FederatedError("local epochs must be at least 1, got 0")) {
            try FederatedSimulation(settings: bad, train: train, test: train)
        }
    }
}
