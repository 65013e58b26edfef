import Testing

@testable import CleaveFederated

private func update(_ client: Int, _ examples: Int, _ delta: [Float], base: Int = 0) -> ClientUpdate {
    ClientUpdate(client: client, examples: examples, delta: delta, baseVersion: base)
}

@Suite struct SynchronousStrategyTests {
    let global: [Float] = [1, 2, 3]

    @Test func fedAvgWeighsByExamples() throws {
        let result = try FederatedAveraging().aggregate(
            global: global, updates: [update(0, 1, [1, 0, 0]), update(1, 3, [0, 4, -4])], round: 1)
        #expect(result == [1.25, 5, 0])
    }

    @Test func medianTakesTheMiddleOrTheMeanOfTheTwoMiddles() throws {
        let odd = try CoordinateMedian().aggregate(
            global: global, updates: [update(0, 1, [0, 9, 1]), update(1, 50, [5, -9, 2]), update(2, 1, [1, 0, 3])], round: 1)
        #expect(odd == [2, 2, 5])
        let even = try CoordinateMedian().aggregate(
            global: global, updates: [update(0, 1, [0, 0, 0]), update(1, 1, [2, 4, 6]), update(2, 1, [1, 1, 1]), update(3, 1, [9, 9, 9])],
            round: 1)
        #expect(even == [2.5, 4.5, 6.5])
    }

    @Test func trimmedMeanDropsBothEnds() throws {
        let updates = [update(0, 1, [100]), update(1, 1, [1]), update(2, 1, [2]), update(3, 1, [3]), update(4, 1, [-100])]
        #expect(try TrimmedMean(beta: 0.2).aggregate(global: [0], updates: updates, round: 1) == [2])
        #expect(try TrimmedMean(beta: 0).aggregate(global: [0], updates: updates, round: 1) == [1.2])
        #expect(throws: FederatedError.self) { try TrimmedMean(beta: 0.5) }
    }

    @Test func krumIgnoresTheOutlierAndMultiKrumAveragesTheBest() throws {
        // Scores with f = 1 (3 nearest): 0.02 → 0.0009, 0.03 → 0.0011, 0.04 → 0.0021, 0 → 0.0029, 0.1 and the attacker far more.
        let honest = [0, 0.02, 0.03, 0.04, 0.1].enumerated().map { update($0.offset, 10, [Float($0.element), 1, -1]) }
        let attacker = update(5, 1000, [50, -50, 50])
        let chosen = try Krum(malicious: 1).aggregate(global: global, updates: honest + [attacker], round: 1)
        #expect(chosen == zip(global, honest[1].delta).map { $0 + $1 })
        let averaged = try Krum(malicious: 1, keep: 3).aggregate(global: global, updates: honest + [attacker], round: 1)
        #expect(abs(averaged[0] - 1.03) < 1e-6)
        #expect(averaged[1] == 3 && averaged[2] == 2)
        #expect(throws: FederatedError.self) { try Krum(malicious: 1, keep: 9).aggregate(global: global, updates: honest, round: 1) }
    }

    @Test func fedAdamTakesABiasCorrectedFirstStep() throws {
        var adam = FederatedAdam(learningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 0)
        // First step: m = 0.1 g, v = 0.01 g², corrected rate η·√(1−β2)/(1−β1) = 0.1: moves by 0.1·sign(g).
        let result = try adam.aggregate(global: [0, 0], updates: [update(0, 1, [0.5, -2])], round: 1)
        #expect(abs(result[0] - 0.1) < 1e-6 && abs(result[1] + 0.1) < 1e-6)
    }

    @Test func badUpdatesAreRefusedByName() {
        #expect(throws: FederatedError("client 1 sent 2 values for a model of 3")) {
            try FederatedAveraging().aggregate(global: global, updates: [update(0, 1, [0, 0, 0]), update(1, 1, [0, 0])], round: 1)
        }
        #expect(throws: FederatedError("client 0 reports 0 training examples")) {
            try FederatedAveraging().aggregate(global: global, updates: [update(0, 0, [0, 0, 0])], round: 1)
        }
        #expect(throws: FederatedError("a round needs at least one update to aggregate")) {
            try CoordinateMedian().aggregate(global: global, updates: [], round: 1)
        }
    }
}

@Suite struct AsynchronousStrategyTests {
    @Test func fedBuffWaitsForKAndWeighsStaleUpdatesLess() throws {
        var buffer = try BufferedAggregation(bufferSize: 2, serverLearningRate: 1)
        #expect(try buffer.receive(update(0, 1, [4]), global: [0], version: 3, now: 1) == nil)
        #expect(buffer.buffered == 1)
        // Fresh update weight 1, staleness-3 update weight 1/√4 = 0.5: mean (4·0.5 + 2·1) / 2 = 2.
        let result = try buffer.receive(update(1, 1, [2], base: 3), global: [0], version: 3, now: 2)
        #expect(result == [2])
        #expect(buffer.buffered == 0)
    }

    @Test func fedAsyncMovesAtOnceByTheStalenessScaledRate() throws {
        let async = try AsynchronousAveraging(alpha: 0.5, staleness: StalenessWeight(exponent: 1))
        #expect(try async.receive(update(0, 1, [8], base: 1), global: [1], version: 4, now: 0) == [1 + 0.5 * 8 / 4])
        #expect(throws: FederatedError.self) { try async.receive(update(0, 1, [8], base: 5), global: [1], version: 4, now: 0) }
    }

    @Test func fedFixAggregatesOnTheIntervalAndCorrectsForSlowClients() throws {
        var fix = try FixedIntervalAggregation(interval: 10, shares: [0.5, 0.5], correctForTime: true)
        #expect(fix.nextTick(after: 0) == 10)
        // Fast client: based on version 0, arrives in the first interval.
        #expect(try fix.receive(update(0, 1, [2]), global: [0], version: 0, now: 9) == nil)
        #expect(fix.nextTick(after: 9.5) == 10, "arrivals must not push the aggregation back")
        #expect(try fix.tick(global: [0], version: 0, now: 5) == nil)
        let first = try #require(try fix.tick(global: [0], version: 0, now: 10))
        #expect(first == [1])
        // Slow client: started from version 0 at time 0, arrives in the third interval: it spanned 3, weight 0.5·3.
        _ = try fix.tick(global: first, version: 1, now: 20)
        #expect(try fix.receive(update(1, 1, [2], base: 0), global: first, version: 1, now: 25) == nil)
        #expect(try fix.tick(global: first, version: 1, now: 30) == [1 + 3])
        var plain = try FixedIntervalAggregation(interval: 10, shares: [0.5, 0.5], correctForTime: false)
        _ = try plain.tick(global: [0], version: 0, now: 20)
        _ = try plain.receive(update(1, 1, [2]), global: [0], version: 0, now: 25)
        #expect(try plain.tick(global: [0], version: 0, now: 30) == [1])
        #expect(throws: FederatedError.self) { try FixedIntervalAggregation(interval: 10, shares: [0.7, 0.7]) }
    }
}
