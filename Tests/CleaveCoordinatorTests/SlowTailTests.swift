import CleaveMQTT
import CleaveSupport
import Foundation
import Testing

/// A slow tail (every batch takes 1.5 s) behind an agent that retries after 1 s: the retries of
/// a request still being computed wait for its answer at the coordinator instead of being
/// computed again, and each answer reaches the application once.
@Suite(.serialized) struct SlowTailTests {
    @Test func retriesOfARequestBeingComputedAreNotComputedAgain() async throws {
        let broker = try LocalBroker()
        let address = "127.0.0.1:\(broker.port)"
        let requestLog = "\(try SystemCall.makeTemporaryDirectory(prefix: "cleave-slow-tail-"))/computed.log"
        let (coordinator, coordinatorLog) = try GracefulShutdownTests.launch(
            "cleave",
            [
                "coordinator", "--broker", address, "--model", SplitServingTests.modelFolder, "--id", "slow-c", "--emulate-batch-ms", "1500",
                "--max-batch", "16", "--request-log", requestLog,
            ])
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }
        let (status, output) = try await SecureFleetTests.run([
            "agent", "--broker", address, "--id", "slow-a", "--profile", "\(SplitServingTests.repository)/devices/generic.yaml", "--mode", "split",
            "--no-fallback", "--timeout", "20", "--model-cache", "none", "--samples", "40", "--in-flight", "40",
        ])
        #expect(status == 0, "\(output.suffix(800))")
        let row = output.split(separator: "\n").last { $0.hasPrefix("split ") && !$0.contains("done") }.map(String.init) ?? ""
        let fields = row.split(separator: " ")
        #expect(fields.count > 2 && fields[1] == "40" && fields[2] == "0", "40 answered, none failed: \(row)")
        _ = await GracefulShutdownTests.terminate(coordinator)
        let last = ((try? String(contentsOf: coordinatorLog, encoding: .utf8)) ?? "").split(separator: "\n").last { $0.contains("answered") } ?? ""
        let counts = last.split(separator: ",").map { $0.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }.first ?? -1 }
        let (computed, twice) = RequestLogs.tally([requestLog])
        print("slow tail: \(row) | \(last) | computed twice \(twice) of \(computed)")
        #expect(computed == 40 && twice == 0, "each of the 40 computed once: \(twice) of \(computed) computed twice")
        // "coordinator slow-c: D devices online, A answered, R rejected, B busy, U duplicates"
        #expect(counts.count == 5 && counts[4] > 0, "the agent's retries reached the coordinator while the first copies computed: \(last)")
    }
}
