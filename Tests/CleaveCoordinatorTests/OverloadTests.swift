import CleaveMQTT
import CleaveSupport
import Foundation
import Testing

/// 10× a coordinator's capacity for 30 s: a coordinator process made slow (every batch of at
/// most 16 takes 200 ms: 80 frames/s) and an agent sending 800 split requests per second with
/// local fallback. The coordinator sheds what it cannot serve (`busy`), its memory stays
/// bounded, the agent computes the rest locally and loses nothing, and once the load is gone a
/// new agent is served remotely at once.
@Suite(.serialized) struct OverloadTests {
    static let repository = SplitServingTests.repository

    /// The process's resident set now and at its peak, in KiB (`/proc/PID/status`).
    static func memory(_ pid: Int32) -> (now: Int, peak: Int) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            text.split(separator: "\n").first { $0.hasPrefix(name) }?.split(separator: " ").compactMap { Int($0) }.first ?? -1
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }

    @Test func overloadIsShedBoundedAndRecovered() async throws {
        let broker = try LocalBroker()
        let address = "127.0.0.1:\(broker.port)"
        let (coordinator, coordinatorLog) = try GracefulShutdownTests.launch(
            "cleave",
            [
                "coordinator", "--broker", address, "--model", SplitServingTests.modelFolder, "--id", "overload-c", "--emulate-batch-ms", "200",
                "--max-batch", "16", "--max-in-flight-per-device", "32",
            ])
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }
        let agent = [
            "agent", "--broker", address, "--profile", "\(Self.repository)/devices/generic.yaml", "--mode", "split", "--model-cache", "none",
        ]
        let (load, loadLog) = try GracefulShutdownTests.launch(
            "cleave", agent + ["--id", "overload-a", "--samples", "24000", "--rate", "800", "--in-flight", "256", "--timeout", "5"])
        defer { if load.isRunning { kill(load.processIdentifier, SIGKILL) } }
        var peak = 0
        var startRSS = -1
        let started = ContinuousClock.now
        while load.isRunning && ContinuousClock.now - started < .seconds(120) {
            try await Task.sleep(for: .milliseconds(250))
            let sample = Self.memory(coordinator.processIdentifier)
            if startRSS < 0, sample.now > 0 { startRSS = sample.now }
            peak = max(peak, sample.peak)
        }
        let loadText = (try? String(contentsOf: loadLog, encoding: .utf8)) ?? ""
        #expect(load.terminationStatus == 0, "\(loadText.suffix(1000))")
        let row = loadText.split(separator: "\n").last { $0.hasPrefix("split ") && !$0.contains("done") }.map(String.init) ?? ""
        let fields = row.split(separator: " ")
        #expect(fields.count > 2 && fields[1] == "24000" && fields[2] == "0", "24,000 sent, none failed: \(row)")
        let answered = loadText.split(separator: "\n").last { $0.hasPrefix("answered ") }.map(String.init) ?? ""
        print("overload: \(row) | \(answered) | coordinator RSS \(startRSS) KiB at start, peak \(peak) KiB")
        // "answered N: R remotely, L locally (F fallbacks …)"
        let counts = answered.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        #expect(counts.count >= 3 && counts[0] == 24_000 && counts[2] > 10_000, "most requests computed locally: \(answered)")
        #expect(peak > 0 && peak < 400 * 1024, "the coordinator's resident set stays bounded: peak \(peak) KiB")

        // The load is gone: a new agent's requests, no fallback, are served remotely at once.
        let recoveryStart = ContinuousClock.now
        let (status, recovery) = try await SecureFleetTests.run(
            agent + ["--id", "overload-b", "--samples", "20", "--rate", "10", "--no-fallback", "--timeout", "5"])
        let recoverySeconds = (ContinuousClock.now - recoveryStart).seconds
        let recoveryRow = recovery.split(separator: "\n").last { $0.hasPrefix("split ") && !$0.contains("done") }.map(String.init) ?? ""
        let recoveryFields = recoveryRow.split(separator: " ")
        #expect(status == 0 && recoveryFields.count > 2 && recoveryFields[2] == "0", "served remotely after the overload: \(recovery.suffix(800))")
        print("after the overload: \(recoveryRow) in \(recoverySeconds) s")
        _ = await GracefulShutdownTests.terminate(coordinator)
        let status2 = ((try? String(contentsOf: coordinatorLog, encoding: .utf8)) ?? "").split(separator: "\n").last { $0.contains("answered") } ?? ""
        print("coordinator: \(status2)")
    }
}
