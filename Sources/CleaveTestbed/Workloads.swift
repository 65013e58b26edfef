import CleaveAgent
import CleaveNetem
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Synchronization

extension Testbed {
    /// Sends inputs `0..<count` round robin over the agents, each agent one request at a time,
    /// in `mode` (nil: each agent's adaptive policy), and returns the outcomes in input order.
    /// `progress` is told how many are done after every answer. Stops early when the task is
    /// cancelled.
    public func stream(
        count: Int, mode: InferenceMode?, input: @escaping @Sendable (Int) -> Tensor, progress: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async -> [AgentOutcome] {
        let agents = self.agents
        guard !agents.isEmpty else { return [] }
        let done = Counter()
        let results = await withTaskGroup(of: [(Int, AgentOutcome)].self) { group in
            for (slot, agent) in agents.enumerated() {
                group.addTask {
                    var mine: [(Int, AgentOutcome)] = []
                    for index in stride(from: slot, to: count, by: agents.count) {
                        if Task.isCancelled { break }
                        let outcome = if let mode { await agent.infer(input(index), mode: mode) } else { await agent.infer(input(index)) }
                        mine.append((index, outcome))
                        await progress(await done.increment())
                    }
                    return mine
                }
            }
            var all: [(Int, AgentOutcome)] = []
            for await part in group { all += part }
            return all
        }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Plays `scenario` on the agents' proxies (a proxy's name is its link) while every agent
    /// sends `rate` requests per second, one at a time, for the scenario's duration, in `mode`
    /// (nil: the adaptive policy). `input(i)` is the i-th request's image and label. Returns
    /// one record per request in time order; `log` hears the timeline's changes and each
    /// adaptive agent's decisions when its mode changes.
    public func play(
        _ scenario: Scenario, rate: Double, mode: InferenceMode?, input: @escaping @Sendable (Int) -> (image: Tensor, label: Int),
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> [RequestRecord] {
        let members = self.members
        let player = ScenarioPlayer(scenario: scenario, proxies: members.compactMap(\.proxy))
        let cancelled = CancellationFlag()
        let start = ContinuousClock.now
        // The player sleeps between changes: on a thread of its own, not one of the few the
        // concurrency pool has (two on a two-core board), which the agents need.
        let playback = Task {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                Thread.detachNewThread {
                    do {
                        try player.play(log: { log("netem: \($0)") }, shouldStop: { cancelled.isSet })
                        done.resume()
                    } catch {
                        done.resume(throwing: error)
                    }
                }
            }
        }
        let end = start + .milliseconds(Int(scenario.duration))
        let records = await withTaskCancellationHandler {
            await withTaskGroup(of: [RequestRecord].self) { group in
                for (slot, member) in members.enumerated() {
                    group.addTask {
                        var mine: [RequestRecord] = []
                        var index = slot
                        var next = start
                        var lastMode: InferenceMode?
                        while next < end && !Task.isCancelled {
                            try? await Task.sleep(until: next, clock: .continuous)
                            let sent = ContinuousClock.now
                            let (image, label) = input(index)
                            let outcome = if let mode { await member.agent.infer(image, mode: mode) } else { await member.agent.infer(image) }
                            if mode == nil, outcome.fallback == nil, outcome.mode != lastMode, let decision = outcome.decision {
                                log("adaptive \(member.name) t=\(String(format: "%.1f", (sent - start).seconds))s: \(decision)")
                                lastMode = outcome.mode
                            }
                            mine.append(RequestRecord(time: (sent - start).seconds, agent: member.name, outcome: outcome, label: label))
                            index += members.count
                            next = max(next + .milliseconds(Int(1000 / rate)), ContinuousClock.now)
                        }
                        return mine
                    }
                }
                var all: [RequestRecord] = []
                for await part in group { all += part }
                return all.sorted { $0.time < $1.time }
            }
        } onCancel: {
            cancelled.set()
        }
        try await playback.value
        return records
    }
}

extension RequestRecord {
    /// The record of one agent request: `ok`/`wrong` against `label` (with `-fallback` when
    /// computed locally after a remote failure), `timeout` when no answer came, else
    /// `error: …` with the failure.
    public init(time: Double, agent: String, outcome: AgentOutcome, label: Int) {
        let status: String
        if let prediction = outcome.prediction {
            status = (prediction == label ? "ok" : "wrong") + (outcome.fallback != nil ? "-fallback" : "")
        } else if case .noAnswer = outcome.failure {
            status = "timeout"
        } else {
            status = "error: \(outcome.error ?? "no prediction")"
        }
        self.init(
            time: time, agent: agent, mode: outcome.mode.rawValue, bytes: outcome.bytesSent, latencyMilliseconds: outcome.latencyMilliseconds,
            outcome: status)
    }
}

private actor Counter {
    private var value = 0
    func increment() -> Int {
        value += 1
        return value
    }
}

/// Set once, read from the scenario player's thread.
private final class CancellationFlag: Sendable {
    private let state = Mutex(false)
    var isSet: Bool { state.withLock { $0 } }
    func set() { state.withLock { $0 = true } }
}
