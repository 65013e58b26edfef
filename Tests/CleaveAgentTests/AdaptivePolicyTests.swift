import CleaveProtocol
import Foundation
import Testing

@testable import CleaveAgent

@Suite struct AdaptivePolicyTests {
    static let costs = ModeCosts(
        localMilliseconds: 40, headMilliseconds: 6, tailMilliseconds: 0.3, fullRemoteMilliseconds: 0.3, splitBytes: 48, offloadBytes: 800)

    /// Feeds `count` answered requests at `latency(mode)` and returns the last decision.
    static func run(_ policy: inout AdaptivePolicy, from start: Double, count: Int, latency: (InferenceMode) -> Double?) -> AdaptivePolicy.Decision {
        var decision = policy.decide(now: start)
        for i in 0..<count {
            let now = start + Double(i) * 0.2
            decision = policy.decide(now: now)
            policy.record(mode: decision.mode, latency: decision.mode == .local ? nil : latency(decision.mode), now: now + 0.01)
        }
        return policy.decide(now: start + Double(count) * 0.2)
    }

    @Test func aFastLinkMeansRemoteAndASlowOneLocal() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        let fast = Self.run(&policy, from: 0, count: 40) { $0 == .split ? 6.3 + 4 : 0.3 + 4.5 }
        #expect(policy.current == .offload, "\(fast)")
        let slow = Self.run(&policy, from: 10, count: 60) { $0 == .split ? 6.3 + 90 : 0.3 + 140 }
        #expect(policy.current == .local, "\(slow)")
        let back = Self.run(&policy, from: 30, count: 80) { $0 == .split ? 6.3 + 4 : 0.3 + 4.5 }
        #expect(policy.current == .offload, "exploration brings it back: \(back)")
    }

    /// On split, with offload 12% faster once exploration has measured it: the policy moves
    /// (a margin above the harness's 10% goal would keep it on split for ever).
    @Test func aModeMoreThanTenPercentFasterIsTaken() {
        var costs = Self.costs
        costs.localMilliseconds = 400
        var policy = AdaptivePolicy(costs: costs, timeout: 1000)
        let last = Self.run(&policy, from: 0, count: 150) { $0 == .split ? 6.3 + 68 : 0.3 + 64.7 }
        #expect(policy.current == .offload, "\(last)")
    }

    /// An agent without a broker connection serves locally whatever the policy says (it still
    /// asks it); once the connection is back the very next request measures the remote path,
    /// although the estimates aged out and the last look was recent.
    @Test func aReconnectMeasuresTheRemotePathAtOnce() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        _ = Self.run(&policy, from: 0, count: 20) { $0 == .split ? 10 : 5 }
        for i in 0..<30 { _ = policy.decide(now: 4 + Double(i) * 0.2) }
        policy.reconnected(now: 10)
        let next = policy.decide(now: 10.05)
        #expect(next.mode != .local && next.race, "\(next)")
    }

    @Test func failuresOpenTheBreakerAndProbesCloseIt() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        _ = Self.run(&policy, from: 0, count: 20) { _ in 10 }
        policy.record(mode: .split, latency: nil, now: 5)
        policy.record(mode: .split, latency: nil, now: 5.1)
        var decisions: [AdaptivePolicy.Decision] = []
        for i in 0..<20 { decisions.append(policy.decide(now: 5.2 + Double(i) * 0.1)) }
        #expect(decisions.filter { $0.mode != .local }.count <= 2, "while down: local, with a probe per second")
        #expect(decisions.contains { $0.reason.contains("probing") })
        let probe = decisions.first { $0.reason.contains("probing") }!
        policy.record(mode: probe.mode, latency: 10, now: 7.5)
        #expect(policy.decide(now: 7.6).mode != .local, "an answered probe closes the breaker")
    }

    /// Requests that only measure the remote path race a local computation, so they cost no more
    /// than local; requests on the chosen remote mode do not.
    @Test func measuringRequestsRaceLocalAndChosenOnesDoNot() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        let first = policy.decide(now: 0)
        #expect(first.race && first.mode != .local, "nothing measured yet: \(first)")
        _ = Self.run(&policy, from: 0, count: 30) { $0 == .split ? 6.3 + 4 : 0.3 + 4.5 }
        #expect(policy.current == .offload && !policy.decide(now: 6.1).race)
        _ = Self.run(&policy, from: 10, count: 60) { $0 == .split ? 6.3 + 90 : 0.3 + 140 }
        #expect(policy.current == .local)
        var exploring: [AdaptivePolicy.Decision] = []
        for i in 0..<200 {
            let decision = policy.decide(now: 30 + Double(i) * 0.2)
            if decision.mode != .local { exploring.append(decision) }
        }
        #expect(!exploring.isEmpty && exploring.allSatisfy(\.race), "exploring while local is best races: \(exploring)")
        policy.record(mode: .split, latency: nil, now: 80)
        policy.record(mode: .split, latency: nil, now: 80.1)
        let probes = (0..<30).map { policy.decide(now: 80.2 + Double($0) * 0.2) }.filter { $0.mode != .local }
        #expect(!probes.isEmpty && probes.allSatisfy(\.race), "probes race: \(probes)")
    }

    /// A late answer (after the request was computed locally) shows a slow path, not a dead one.
    @Test func aLateAnswerClosesTheBreakerAndTeachesTheLatency() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        _ = Self.run(&policy, from: 0, count: 20) { _ in 10 }
        policy.record(mode: .split, latency: nil, now: 10)
        policy.record(mode: .split, latency: nil, now: 10.1)
        #expect(policy.decide(now: 10.15).reason.contains("down"))
        policy.record(mode: .split, latency: 400, now: 10.2)
        let decision = policy.decide(now: 10.3)
        #expect(!decision.reason.contains("down") && (decision.predicted[.split] ?? 0) > 300, "\(decision)")
    }

    @Test func hedgingWaitsAtLeastTheLocalTimeAndBoundsTheWait() {
        var policy = AdaptivePolicy(costs: Self.costs, timeout: 1000)
        _ = Self.run(&policy, from: 0, count: 20) { _ in 10 }
        let hedge = policy.hedgeDelay(for: .split)
        #expect(hedge >= Self.costs.localMilliseconds && hedge < 100, "hedge \(hedge) ms")
    }
}

@Suite struct RequestIDTests {
    /// A restarted agent must not reuse ids the coordinator's duplicate cache still holds (the
    /// harness found this: a second run with the same device ids got the first run's answers),
    /// whatever the clock says: a thousand starts at the same instant are a million ids apart.
    @Test func idsOfARestartedAgentDoNotMeetTheEarlierOnes() {
        let starts = (0..<1000).map { _ in Agent.firstRequestID() }.sorted()
        #expect(zip(starts, starts.dropFirst()).allSatisfy { $1 - $0 > 1_000_000 }, "a million requests fit between any two starts")
        #expect(starts.allSatisfy { $0 >= 1 && $0 <= 1 << 62 })
    }
}
