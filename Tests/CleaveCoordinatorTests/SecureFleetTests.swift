import CleaveFleet
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import Foundation
import Testing

/// The deployed path with real processes: a fleet made by `cleave fleet`, a Mosquitto that takes
/// only TLS members, a coordinator that signs and an agent pinned to the fleet key.
@Suite(.serialized) struct SecureFleetTests {
    static let repository = SplitServingTests.repository

    /// Runs `cleave ARGUMENTS` to the end (at most `limit` seconds), returning status and output.
    static func run(_ arguments: [String], limit: Double = 120) async throws -> (status: Int32, output: String) {
        let (process, output) = try GracefulShutdownTests.launch("cleave", arguments)
        let start = ContinuousClock.now
        while process.isRunning && ContinuousClock.now - start < .seconds(limit) { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return (process.terminationStatus, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
    }

    @Test func secureDemoRunsEndToEndOverTLS() async throws {
        let (status, output) = try await Self.run([
            "demo", "--secure", "--samples", "200", "--model", SplitServingTests.modelFolder, "--devices", "\(Self.repository)/devices",
        ])
        #expect(status == 0, "\(output.suffix(1500))")
        #expect(output.contains("secure: a new fleet") && output.contains("(TLS only)"))
        for mode in ["split", "local", "offload"] {
            let row = output.split(separator: "\n").first { $0.hasPrefix(mode + " ") && $0.contains("%") && !$0.contains("done") }
            let fields = row?.split(separator: " ") ?? []
            #expect(fields.count > 2 && fields[1] == "200" && fields[2] == "0", "\(mode): 200 requests, 0 failed: \(row ?? "no row")")
        }
        #expect(!output.contains("refused control message"), "the coordinator's signed control is taken")
        if let range = output.range(of: #"a new fleet in (\S+):"#, options: .regularExpression) {
            let folder = String(output[range].dropFirst("a new fleet in ".count).dropLast())
            #expect(!FileManager.default.fileExists(atPath: folder), "the demo's fleet folder (with its keys) is removed")
        }
    }

    @Test func enrolledProcessesServeAndAnUnsignedControlMessageIsRefused() async throws {
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-fleet-cli-")
        chmod(folder, 0o755)
        let fleet = "\(folder)/fleet"
        for arguments in [
            ["init", "--host", "127.0.0.1"], ["enroll", "c1", "--coordinator"], ["enroll", "c2", "--coordinator"], ["enroll", "pi-1"],
        ] {
            let (status, output) = try await Self.run(["fleet"] + arguments + ["--dir", fleet])
            #expect(status == 0, "cleave fleet \(arguments.joined(separator: " ")): \(output)")
        }
        chmod(fleet, 0o755)
        let authority = try FleetAuthority(directory: fleet)
        let broker = try LocalBroker(extraConfiguration: authority.accessSettings + "\n" + authority.listenerSettings, allowAnonymous: false)
        let address = "127.0.0.1:\(broker.port)"
        let (coordinator, _) = try GracefulShutdownTests.launch(
            "cleave", ["coordinator", "--broker", address, "--model", SplitServingTests.modelFolder, "--id", "c1", "--member", "\(fleet)/members/c1"])
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }

        // An agent that sends 50 requests over TLS, taking its assignment only signed.
        let (status, output) = try await Self.run([
            "agent", "--broker", address, "--member", "\(fleet)/members/pi-1", "--profile", "\(Self.repository)/devices/generic.yaml",
            "--samples", "50", "--mode", "split", "--model-cache", "none", "--no-fallback",
        ])
        #expect(status == 0, "\(output.suffix(1500))")
        #expect(output.contains("assigned fmnist-c4") && !output.contains("refused control message"), "\(output.suffix(800))")
        let summary = output.split(separator: "\n").last { $0.contains("split") && $0.contains("%") }
        #expect(summary?.split(separator: " ").dropFirst().first == "50", "\(summary ?? "no summary")")

        // A coordinator login without the signing key (c2's password and certificate) tells pi-1
        // to run something else, unsigned: the agent refuses it and says so.
        let (agent, agentOutput) = try GracefulShutdownTests.launch(
            "cleave",
            [
                "agent", "--broker", address, "--member", "\(fleet)/members/pi-1", "--profile", "\(Self.repository)/devices/generic.yaml",
                "--model-cache", "none",
            ])
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        func agentLog() -> String { (try? String(contentsOf: agentOutput, encoding: .utf8)) ?? "" }
        let start = ContinuousClock.now
        while !agentLog().contains("models verified") && ContinuousClock.now - start < .seconds(60) { try await Task.sleep(for: .milliseconds(50)) }
        #expect(agentLog().contains("models verified"), "\(agentLog().suffix(800))")
        let login = try authority.credentials(of: "c2")
        let forger = try MQTTClient(
            MQTTConfiguration(
                port: broker.port, clientID: "c2", username: "c2", password: login.password,
                tls: .init(caFile: login.caFile, certificateFile: login.certificateFile, keyFile: login.keyFile)))
        _ = try await forger.connect(deliveringEventsTo: { _ in })
        let forged = #"{"version":1,"assignment":null}"#
        try forger.publish(MQTTMessage(topic: Topic.deviceControl(device: "pi-1").path, payload: Array(forged.utf8), qos: 1))
        // (The retained message sent to the first agent process is refused as a replay first.)
        while !agentLog().contains("unsigned: the message is not signed") && ContinuousClock.now - start < .seconds(60) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            agentLog().contains("refused control message on cleave/v1/devices/pi-1/control") && agentLog().contains("unsigned"),
            "\(agentLog().suffix(800))")
        #expect(agentLog().contains("replayed: it answers another start of this device"), "the first process's retained message is a replay here")
        forger.disconnect()
        _ = await GracefulShutdownTests.terminate(agent)
        _ = await GracefulShutdownTests.terminate(coordinator)
    }
}
