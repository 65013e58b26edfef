import CleaveAgent
import CleaveDatasets
import CleaveMQTT
import CleaveProtocol
import Foundation
import Testing

@testable import CleaveCoordinator

/// SIGTERM to `cleave coordinator` and to `cleave-agent`, as systemd sends it: the requests in
/// flight are finished and the process exits 0 within 5 s. Real Mosquitto, real processes.
@Suite(.serialized) struct GracefulShutdownTests {
    static let products =
        Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }?.deletingLastPathComponent()
        ?? URL(fileURLWithPath: ".build/debug")

    /// Starts `binary` with `arguments`, its standard output collected in a file.
    static func launch(_ binary: String, _ arguments: [String]) throws -> (Process, URL) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-term-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let process = Process()
        process.executableURL = products.appendingPathComponent(binary)
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, output)
    }

    /// Sends SIGTERM and returns the seconds until the process exited (at most `limit`, then SIGKILL).
    static func terminate(_ process: Process, limit: Double = 10) async -> Double {
        let start = ContinuousClock.now
        kill(process.processIdentifier, SIGTERM)
        while process.isRunning && (ContinuousClock.now - start) < .seconds(limit) { try? await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    @Test func coordinatorFinishesFramesInFlightAndExitsZero() async throws {
        let broker = try LocalBroker()
        let (process, _) = try Self.launch(
            "cleave", ["coordinator", "--broker", "127.0.0.1:\(broker.port)", "--model", SplitServingTests.modelFolder, "--id", "term-c"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        let agent = try Agent(
            AgentConfiguration(
                deviceID: "term-agent", profile: profile, brokerPort: broker.port, threads: 1, requestTimeout: .seconds(3),
                fallbackToLocal: false))
        try await agent.start()
        try await agent.waitUntilReady()
        let image = try FashionMNIST(split: .test).image(0)
        // Eight requests at a time, without pause, while the coordinator is told to stop.
        let outcomes = try await withThrowingTaskGroup(of: [AgentOutcome].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine: [AgentOutcome] = []
                    let end = ContinuousClock.now + .seconds(2)
                    while ContinuousClock.now < end { mine.append(await agent.infer(image, mode: .split)) }
                    return mine
                }
            }
            try await Task.sleep(for: .seconds(1))
            let seconds = await Self.terminate(process)
            #expect(seconds < 5, "exited after \(seconds) s")
            #expect(process.terminationReason == .exit && process.terminationStatus == 0, "status \(process.terminationStatus)")
            var all: [AgentOutcome] = []
            for try await part in group { all += part }
            return all
        }
        let answered = outcomes.filter { $0.prediction != nil }.count
        #expect(answered > 10, "served before the signal: \(answered)")
        // Every request either got its answer or found no coordinator (no answer); none was
        // dropped half-way with an error from the stopping coordinator.
        #expect(!outcomes.contains { if case .rejected = $0.failure { true } else { false } })
        await agent.stop()
    }

    @Test func leanAgentFinishesItsRequestAndExitsZero() async throws {
        let broker = try LocalBroker()
        let coordinator = try Coordinator(
            CoordinatorConfiguration(id: "term-c2", brokerPort: broker.port), bundle: try ModelBundle(directory: SplitServingTests.modelFolder))
        try await coordinator.start()
        let (process, output) = try Self.launch(
            "cleave-agent",
            [
                "--broker", "127.0.0.1:\(broker.port)", "--profile", "\(SplitServingTests.repository)/devices/generic.yaml", "--id", "term-a",
                "--mode", "split", "--samples", "1000000", "--rate", "100", "--model-cache", "none",
            ])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // SIGTERM once it is serving (a debug build takes seconds to load its models).
        let ready = ContinuousClock.now
        while await coordinator.statistics.answered < 20 && ContinuousClock.now - ready < .seconds(60) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let seconds = await Self.terminate(process)
        #expect(seconds < 5, "exited after \(seconds) s")
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "status \(process.terminationStatus)")
        let text = try String(contentsOf: output, encoding: .utf8)
        let row = text.split(separator: "\n").first { $0.hasPrefix("split ") }
        let fields = row?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        #expect(fields.count > 3 && Int(fields[1]) ?? 0 > 0 && fields[2] == "0", "the final summary: \(text)")
        try await Task.sleep(for: .milliseconds(200))
        #expect(await coordinator.onlineDevices.isEmpty, "the agent announced itself offline")
        await coordinator.stop()
    }
}
