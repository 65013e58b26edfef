import CleaveMQTT
import Foundation
import Testing

/// `cleave fl run` and `cleave agent --fl` as separate processes over a real Mosquitto:
/// the coordinator killed with SIGKILL mid-run, agents killed and restarted.
@Suite(.serialized) struct FederatedFleetProcessTests {
    static let dataPresent = FederatedProcessTests.dataPresent

    /// The coordinator's arguments for run `run` on `port`.
    func coordinator(run: String, port: Int, clients: Int, rounds: Int, checkpoint: String? = nil) -> [String] {
        [
            "fl", "run", "--run", run, "--broker", "127.0.0.1:\(port)", "--clients", "\(clients)", "--rounds", "\(rounds)", "--local-epochs", "1",
            "--partition", "iid", "--train-limit", "1500", "--test-limit", "300", "--seed", "2",
        ] + (checkpoint.map { ["--checkpoint", $0] } ?? [])
    }

    func agent(run: String, port: Int, shard: Int, log: String, slowProfile: String? = nil) throws -> Process {
        try start(
            ["agent", "--fl", "--run", run, "--shard", "\(shard)", "--id", "\(run)-\(shard)", "--broker", "127.0.0.1:\(port)", "--threads", "1"]
                + (slowProfile.map { ["--profile", $0, "--emulate-board"] } ?? []),
            log: log)
    }

    /// A board profile slow enough (0.3 GFLOPS: ~3 s per update of 500 images) that a round waits for it.
    func writeSlowProfile(in directory: String) throws -> String {
        let path = "\(directory)/slow.yaml"
        let profile = try String(contentsOfFile: "devices/generic.yaml", encoding: .utf8)
            .replacingOccurrences(of: "name: generic", with: "name: slow-board").replacingOccurrences(of: "gflops: 4.0", with: "gflops: 0.3")
        try profile.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func start(_ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// Waits until `log` holds `text` (at most 60 s); false if the process ended first.
    func wait(for text: String, in log: String, of process: Process) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let contents = try? String(contentsOfFile: log, encoding: .utf8), contents.contains(text) { return true }
            guard process.isRunning else { return false }
            usleep(20_000)
        }
        return false
    }

    func finalLine(_ log: String) -> String? {
        (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").last { $0.hasPrefix("final accuracy") }.map(String.init)
    }

    /// Accuracy column of every round line.
    func accuracies(_ log: String) -> [String] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("round") }.compactMap {
            $0.components(separatedBy: "accuracy ").last?.components(separatedBy: " ").first
        }
    }

    @Test(.enabled(if: dataPresent, "install dataset-fashion-mnist"), .timeLimit(.minutes(5)))
    func killedCoordinatorResumesAndEndsAsAnUninterruptedRun() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fleet-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broker = try LocalBroker()

        // Uninterrupted: the coordinator and three agents, the third on a slow board.
        let slow = try writeSlowProfile(in: directory)
        func agents(_ run: String) throws -> [Process] {
            try (0..<3).map {
                try agent(run: run, port: broker.port, shard: $0, log: "\(directory)/\(run)-\($0).log", slowProfile: $0 == 2 ? slow : nil)
            }
        }
        var fleet = try agents("whole")
        let whole = try start(coordinator(run: "whole", port: broker.port, clients: 3, rounds: 5), log: "\(directory)/whole.log")
        whole.waitUntilExit()
        for agent in fleet { agent.waitUntilExit() }
        try #require(
            whole.terminationStatus == 0,
            "uninterrupted run failed: \((try? String(contentsOfFile: "\(directory)/whole.log", encoding: .utf8)) ?? "")")
        #expect(fleet.allSatisfy { $0.terminationStatus == 0 }, "agents leave with status 0 when the run is finished")
        let expected = try #require(finalLine("\(directory)/whole.log"))

        // The same run, its coordinator killed with SIGKILL in round 3 — after the fast agents have sent
        // their updates, while the slow one trains — then started again.
        fleet = try agents("killed")
        let checkpoint = "\(directory)/killed.json"
        let arguments = coordinator(run: "killed", port: broker.port, clients: 3, rounds: 5, checkpoint: checkpoint)
        let first = try start(arguments, log: "\(directory)/killed-first.log")
        try #require(wait(for: "round 3: sent", in: "\(directory)/killed-0.log", of: first), "the first coordinator never reached round 3")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        #expect(first.terminationReason == .uncaughtSignal)
        let second = try start(arguments, log: "\(directory)/killed-second.log")
        second.waitUntilExit()
        for agent in fleet { agent.waitUntilExit() }
        let secondLog = (try? String(contentsOfFile: "\(directory)/killed-second.log", encoding: .utf8)) ?? ""
        try #require(second.terminationStatus == 0, "resumed run failed: \(secondLog)")
        #expect(secondLog.contains("resumed after round 2"), "\(secondLog)")
        let resent = (try? String(contentsOfFile: "\(directory)/killed-0.log", encoding: .utf8)) ?? ""
        #expect(resent.contains("round 3: the coordinator restarted; sent the update again"), "\(resent)")
        #expect(finalLine("\(directory)/killed-second.log") == expected, "uninterrupted: \(expected); resumed: \(secondLog)")
        let resumed = accuracies("\(directory)/killed-second.log")
        #expect(!resumed.isEmpty && Array(accuracies("\(directory)/whole.log").suffix(resumed.count)) == resumed)
    }

    @Test(.enabled(if: dataPresent, "install dataset-fashion-mnist"), .timeLimit(.minutes(5)))
    func threeOfTenAgentsGoneForFiveRoundsNothingHangs() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fleet-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broker = try LocalBroker()
        var agents = try (0..<10).map { try agent(run: "drops", port: broker.port, shard: $0, log: "\(directory)/agent-\($0).log") }
        let coordinatorLog = "\(directory)/coordinator.log"
        let coordinator = try start(
            self.coordinator(run: "drops", port: broker.port, clients: 10, rounds: 20) + ["--deadline", "2"], log: coordinatorLog)
        try #require(wait(for: "round    1", in: coordinatorLog, of: coordinator))
        // Two agents die (their wills mark them offline: rounds stop waiting for them at once); a
        // third hangs, still connected (SIGSTOP): only the deadline lets its rounds close.
        for shard in 0..<2 { kill(agents[shard].processIdentifier, SIGKILL) }
        kill(agents[2].processIdentifier, SIGSTOP)
        try #require(wait(for: "round    6", in: coordinatorLog, of: coordinator), "the run hung while three agents were gone")
        for shard in 0..<2 { agents[shard] = try agent(run: "drops", port: broker.port, shard: shard, log: "\(directory)/again-\(shard).log") }
        kill(agents[2].processIdentifier, SIGCONT)
        coordinator.waitUntilExit()
        for agent in agents { agent.waitUntilExit() }
        let log = (try? String(contentsOfFile: coordinatorLog, encoding: .utf8)) ?? ""
        try #require(coordinator.terminationStatus == 0, "\(log)")
        let rounds = log.split(separator: "\n").filter { $0.hasPrefix("round") }
        let updates = rounds.compactMap { $0.components(separatedBy: "updates ").last?.split(separator: " ").first.flatMap { Int($0) } }
        #expect(updates.count == 20)
        #expect(updates.contains { $0 == 7 }, "rounds without the three agents aggregate the other seven: \(updates)")
        #expect(rounds.contains { $0.contains("dropped 1") }, "the hung agent is dropped at the deadline: \(rounds)")
        #expect(updates.last == 10, "the three agents rejoin: \(updates)")
        #expect(log.contains("left: drops-0") && log.contains("final accuracy"))
    }

    @Test(.enabled(if: dataPresent, "install dataset-fashion-mnist"), .timeLimit(.minutes(5)))
    func brokerKilledAndRestartedMidRunTheRunFinishes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fleet-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var broker = try LocalBroker()
        let port = broker.port
        let agents = try (0..<3).map { try agent(run: "outage", port: port, shard: $0, log: "\(directory)/agent-\($0).log") }
        let coordinatorLog = "\(directory)/coordinator.log"
        let coordinator = try start(self.coordinator(run: "outage", port: port, clients: 3, rounds: 8), log: coordinatorLog)
        try #require(wait(for: "round    2", in: coordinatorLog, of: coordinator))
        // Without persistence: the restarted broker has lost the retained task and model, the
        // sessions and whatever was in flight; the coordinator and agents must put them back.
        broker.kill9()
        usleep(1_000_000)
        broker = try LocalBroker(port: port)
        coordinator.waitUntilExit()
        for agent in agents { agent.waitUntilExit() }
        let log = (try? String(contentsOfFile: coordinatorLog, encoding: .utf8)) ?? ""
        try #require(coordinator.terminationStatus == 0, "\(log)")
        #expect(log.split(separator: "\n").filter { $0.hasPrefix("round") }.count == 8, "\(log)")
        #expect(agents.allSatisfy { $0.terminationStatus == 0 })
        _ = broker
    }
}
