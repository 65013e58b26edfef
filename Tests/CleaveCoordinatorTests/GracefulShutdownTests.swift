import CleaveAgent
import CleaveDatasets
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import CleaveTestbed
import Foundation
import Testing

@testable import CleaveCoordinator
@testable import CleaveNetem

/// SIGTERM to `cleave coordinator` and to `cleave-agent`, as systemd sends it: the requests in
/// flight are finished and the process exits 0 within 5 s. Real Mosquitto, real processes.
@Suite(.serialized) struct GracefulShutdownTests {
    static let products =
        Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }?.deletingLastPathComponent()
        ?? URL(fileURLWithPath: ".build/debug")

    /// Starts `binary` with `arguments`, its standard output and error collected in a file.
    /// `environment` is added to the test's own; `launcher` (a command and its arguments) starts
    /// the binary instead of the test itself.
    static func launch(
        _ binary: String, _ arguments: [String], environment: [String: String] = [:], launcher: [String] = []
    ) throws -> (Process, URL) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-term-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let process = Process()
        process.executableURL = products.appendingPathComponent(binary)
        process.arguments = arguments
        if let command = launcher.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = launcher.dropFirst() + [products.appendingPathComponent(binary).path] + arguments
        }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
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
        let testbed = try Testbed()
        let (process, _) = try Self.launch(
            "cleave", ["coordinator", "--broker", "127.0.0.1:\(testbed.brokerPort)", "--model", SplitServingTests.modelFolder, "--id", "term-c"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        let agent = try await testbed.addAgent(
            AgentConfiguration(deviceID: "term-agent", profile: profile, threads: 1, requestTimeout: .seconds(3), fallbackToLocal: false))
        try await testbed.waitUntilReady()
        let image = try FashionMNIST(split: .test).image(0)
        // Eight requests at a time, without pause; the coordinator is told to stop once it has
        // served twenty (a loaded CI machine may take seconds for its first batches), and the
        // requests keep coming for a second after it has gone.
        let progress = Progress()
        let outcomes = try await withThrowingTaskGroup(of: [AgentOutcome].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine: [AgentOutcome] = []
                    while await !progress.finished {
                        let outcome = await agent.infer(image, mode: .split)
                        mine.append(outcome)
                        await progress.record(outcome)
                    }
                    return mine
                }
            }
            let serving = ContinuousClock.now
            while await progress.answered < 20 && ContinuousClock.now - serving < .seconds(60) {
                try await Task.sleep(for: .milliseconds(20))
            }
            let servedBeforeSignal = await progress.answered
            #expect(servedBeforeSignal >= 20, "served before the signal: \(servedBeforeSignal)")
            let seconds = await Self.terminate(process)
            #expect(seconds < 5, "exited after \(seconds) s")
            #expect(process.terminationReason == .exit && process.terminationStatus == 0, "status \(process.terminationStatus)")
            try await Task.sleep(for: .seconds(1))
            await progress.finish()
            var all: [AgentOutcome] = []
            for try await part in group { all += part }
            return all
        }
        // Every request either got its answer or found no coordinator (no answer); none was
        // dropped half-way with an error from the stopping coordinator.
        #expect(!outcomes.contains { if case .rejected = $0.failure { true } else { false } })
        await testbed.stop()
    }

    @Test func leanAgentFinishesItsRequestAndExitsZero() async throws {
        let testbed = try Testbed()
        let coordinator = try await testbed.addCoordinator(
            CoordinatorConfiguration(id: "term-c2"), bundle: try ModelBundle(directory: SplitServingTests.modelFolder))
        let (process, output) = try Self.launch(
            "cleave-agent",
            [
                "--broker", "127.0.0.1:\(testbed.brokerPort)", "--profile", "\(SplitServingTests.repository)/devices/generic.yaml", "--id", "term-a",
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
        await testbed.stop()
    }

    /// SIGTERM while the lean agent still waits for an assignment (no coordinator): it stops
    /// waiting and exits 0 at once.
    @Test func leanAgentWaitingForItsModelsExitsZero() async throws {
        let testbed = try Testbed()
        let (process, _) = try Self.launch(
            "cleave-agent",
            [
                "--broker", "127.0.0.1:\(testbed.brokerPort)", "--profile", "\(SplitServingTests.repository)/devices/generic.yaml", "--id",
                "term-waiting", "--model-cache", "none",
            ])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Online (its retained state is on the broker), so it is past start-up and waiting.
        let client = try MQTTClient(MQTTConfiguration(port: testbed.brokerPort, clientID: "term-watcher"))
        try client.connect()
        let online = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in client.events {
                    if case .connected = event { try? client.subscribe(Topic.deviceState(device: "term-waiting").path, qos: 1) }
                    if case .message(let message) = event, String(decoding: message.payload, as: UTF8.self).contains("online") { return true }
                }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(60))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(online, "the agent announced itself")
        let seconds = await Self.terminate(process)
        #expect(seconds < 5, "exited after \(seconds) s")
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "status \(process.terminationStatus)")
        client.disconnect()
        await testbed.stop()
    }

    /// Ctrl-C in `cleave demo` (its testbed under a ServiceGroup): exits 130 within 5 s, and
    /// the Mosquitto it started is gone.
    @Test func interruptedDemoStopsWhatItStarted() async throws {
        let repository = SplitServingTests.repository
        let (process, output) = try Self.launch(
            "cleave", ["demo", "--model", SplitServingTests.modelFolder, "--devices", "\(repository)/devices", "--samples", "10000"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        var port: Int?
        var ready = false
        let started = ContinuousClock.now
        while !ready && process.isRunning && ContinuousClock.now - started < .seconds(60) {
            try await Task.sleep(for: .milliseconds(50))
            let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
            if port == nil, let range = text.range(of: #"started mosquitto on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last!)
            }
            ready = text.contains("agents ready")
        }
        #expect(ready, "the demo came up")
        let brokerPort = try #require(port)
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        kill(process.processIdentifier, SIGINT)
        while process.isRunning && ContinuousClock.now - start < .seconds(15) { try await Task.sleep(for: .milliseconds(10)) }
        let seconds = (ContinuousClock.now - start).seconds
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        #expect(seconds < 5, "exited after \(seconds) s; its output ends: \(text.suffix(600))")
        #expect(process.terminationReason == .exit && process.terminationStatus == 130, "status \(process.terminationStatus)")
        #expect(
            (try? TCPSocket.connect(to: Endpoint(host: "127.0.0.1", port: UInt16(brokerPort)))) == nil,
            "the demo's broker on port \(brokerPort) is stopped")
    }

    /// What the request loops of the coordinator test have seen so far.
    actor Progress {
        private(set) var answered = 0
        private(set) var finished = false
        func record(_ outcome: AgentOutcome) { if outcome.prediction != nil { answered += 1 } }
        func finish() { finished = true }
    }
}
