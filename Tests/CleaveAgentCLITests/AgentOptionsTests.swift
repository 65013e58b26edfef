import ArgumentParser
import CleaveAgent
import Foundation
import Testing

@testable import CleaveAgentCLI

/// The one set of agent options that `cleave agent` and `cleave-agent` share: parsing,
/// validation with messages that name the option, and the configuration they make.
@Suite struct AgentOptionsTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path

    @Test func brokerAddressesParseOrAreRefused() {
        let address = BrokerAddress(argument: "coordinator.local:8883")
        #expect(address?.host == "coordinator.local" && address?.port == 8883)
        for bad in ["coordinator.local", "host:0", "host:65536", "host:port", "a:1:2", ""] {
            #expect(BrokerAddress(argument: bad) == nil, "'\(bad)' must be refused")
        }
    }

    @Test func optionsBecomeTheAgentsConfiguration() throws {
        let passwordFile = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-password-\(UUID().uuidString)").path
        try "s3cret\nignored\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: passwordFile) }
        let options = try AgentOptions.parse([
            "--broker", "10.0.0.2:1884", "--profile", "\(Self.repository)/devices/raspberry-pi-4b-4gb.yaml", "--id", "pi-7", "--timeout", "2.5",
            "--offline-queue", "8", "--no-fallback", "--model-cache", "none", "--username", "pi-7", "--password-file", passwordFile,
        ])
        let configuration = try options.configuration()
        #expect(configuration.deviceID == "pi-7" && configuration.profile.name == "raspberry-pi-4b-4gb")
        #expect(configuration.brokerHost == "10.0.0.2" && configuration.brokerPort == 1884)
        #expect(configuration.requestTimeout == .milliseconds(2500) && configuration.offlineQueueLimit == 8 && !configuration.fallbackToLocal)
        #expect(configuration.modelCache == nil, "--model-cache none keeps artifacts in memory")
        #expect(configuration.username == "pi-7" && configuration.password == "s3cret", "the password is the file's first line")
    }

    @Test func badValuesAreRefusedWithTheOptionNamed() {
        for (arguments, fragment) in [
            (["--mode", "sideways"], "--mode"), (["--timeout", "0"], "--timeout"), (["--offline-queue", "0"], "--offline-queue"),
            (["--rate", "-1"], "--rate"), (["--broker", "nohost"], "broker"),
        ] {
            do {
                _ = try AgentOptions.parse(arguments)
                Issue.record("\(arguments) was accepted")
            } catch {
                let message = AgentOptions.message(for: error)
                #expect(message.contains(fragment), "\(arguments): \(message)")
            }
        }
    }

    @Test func anUnreadablePasswordFileIsNamed() throws {
        let options = try AgentOptions.parse(["--password-file", "/nonexistent/cleave-password"])
        #expect(throws: ValidationError.self) { try options.credentials.resolved() }
        #expect(throws: (any Error).self) { try options.configuration() }
    }
}
