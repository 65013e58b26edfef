import CleaveMQTT
import CleaveSupport
import Foundation
import Testing

/// An agent killed with `kill -9` while 50 split requests wait for a coordinator that is
/// stopped (SIGSTOP): with a request journal the next agent process sends them again and each
/// is answered once, computed once; without one they are lost with the process.
@Suite(.serialized) struct AgentCrashTests {
    static let repository = SplitServingTests.repository

    static func text(_ url: URL) -> String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }

    static func waitFor(_ what: String, limit: Duration = .seconds(60), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while !condition() {
            guard ContinuousClock.now < deadline else { throw CrashTestError(description: "timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    struct CrashTestError: Error, CustomStringConvertible { let description: String }

    struct Row {
        var sent = 50
        var recovered = 0
        var uniqueAnswers = 0
        var computed = 0
        var computedTwice = 0
    }

    /// Runs the fault; `journaled` false gives the new process no journal. The killed agent
    /// always keeps one, so that the test knows when all 50 requests are out.
    static func crash(journaled: Bool) async throws -> Row {
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-crash-journal-")
        let journal: String? = journaled ? folder : nil
        let broker = try LocalBroker()
        let address = "127.0.0.1:\(broker.port)"
        let cache = try SystemCall.makeTemporaryDirectory(prefix: "cleave-crash-cache-")
        let requestLog = "\(folder)-computed.log"
        let (coordinator, _) = try GracefulShutdownTests.launch(
            "cleave",
            ["coordinator", "--broker", address, "--model", SplitServingTests.modelFolder, "--id", "crash-c", "--request-log", requestLog])
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }
        let agentArguments = [
            "agent", "--broker", address, "--id", "crash-a", "--profile", "\(Self.repository)/devices/generic.yaml", "--mode", "split",
            "--no-fallback", "--timeout", "60", "--model-cache", cache, "--in-flight", "64",
        ]
        // A first run fills the model cache and leaves the retained assignment.
        let (warm, _) = try GracefulShutdownTests.launch("cleave", agentArguments + ["--samples", "1"])
        try await waitFor("the warm-up agent") { !warm.isRunning }
        #expect(warm.terminationStatus == 0)

        kill(coordinator.processIdentifier, SIGSTOP)
        let (victim, _) = try GracefulShutdownTests.launch("cleave", agentArguments + ["--samples", "50", "--queue-dir", folder])
        defer { if victim.isRunning { kill(victim.processIdentifier, SIGKILL) } }
        try await waitFor("50 journal files") { ((try? SystemCall.listDirectory(folder)) ?? []).filter { $0.hasSuffix(".request") }.count == 50 }
        // Written before publishing: give the last publications a moment to reach the broker.
        try await Task.sleep(for: .milliseconds(500))
        kill(victim.processIdentifier, SIGKILL)
        victim.waitUntilExit()
        kill(coordinator.processIdentifier, SIGCONT)

        let (successor, successorLog) = try GracefulShutdownTests.launch(
            "cleave", agentArguments + ["--samples", "0"] + (journal.map { ["--queue-dir", $0] } ?? []))
        defer { if successor.isRunning { kill(successor.processIdentifier, SIGKILL) } }
        var row = Row()
        if let journal {
            try await waitFor("50 recovered answers") {
                (try? SystemCall.readFile("\(journal)/answers.jsonl")).map { String(decoding: $0, as: UTF8.self).split(separator: "\n").count } == 50
            }
            let lines = String(decoding: try SystemCall.readFile("\(journal)/answers.jsonl"), as: UTF8.self).split(separator: "\n")
            let answers = lines.compactMap { try? JSONDecoder().decode(RecoveredAnswer.self, from: Data($0.utf8)) }
            row.recovered = answers.filter { $0.prediction != nil }.count
            row.uniqueAnswers = Set(answers.map(\.requestID)).count
        } else {
            try await waitFor("the successor's models") { text(successorLog).contains("models verified") }
            try await Task.sleep(for: .seconds(3))
        }
        _ = await GracefulShutdownTests.terminate(successor)
        _ = await GracefulShutdownTests.terminate(coordinator)
        // What the coordinator computed (the warm-up's 1 request left out).
        let (computed, twice) = RequestLogs.tally([requestLog])
        row.computed = computed - 1
        row.computedTwice = twice
        return row
    }

    struct RecoveredAnswer: Decodable {
        var requestID: UInt64
        var prediction: Int?
    }

    @Test func aJournalCarriesRequestsThroughAnAgentCrash() async throws {
        let row = try await Self.crash(journaled: true)
        print("agent kill -9 with 50 in flight, journal: \(row)")
        #expect(row.recovered == 50 && row.uniqueAnswers == 50, "every request answered once after the restart: \(row)")
        #expect(row.computed == 50 && row.computedTwice == 0, "each computed once (the resends are answered from the coordinator's cache): \(row)")
    }

    @Test func withoutAJournalACrashLosesTheRequestsInFlight() async throws {
        let row = try await Self.crash(journaled: false)
        print("agent kill -9 with 50 in flight, no journal: \(row)")
        #expect(row.recovered == 0)
        #expect(row.computed == 50 && row.computedTwice == 0, "the coordinator computed them, but nobody received the answers: \(row)")
    }
}
