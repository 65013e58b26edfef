import ArgumentParser
import CleaveAgent
import CleaveDatasets
import CleaveProtocol

import Foundation

/// The lean agent for boards: the same agent as `cleave agent`, without the
/// coordinator, training or model tools linked in.
@main
struct CleaveAgentMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleave-agent",
        abstract: "Cleave device agent: announce, take the assignment, serve requests over MQTT.",
        discussion: "Same options as `cleave agent`. With --samples 0 it stays online until interrupted.")

    @Option(help: "Broker host.") var host: String = "127.0.0.1"
    @Option(help: "Broker port.") var port: Int = 1883
    @Option(help: "Device profile YAML.") var profile: String = "devices/generic.yaml"
    @Option(help: "Device id (default: the profile name and the process id).") var id: String?
    @Option(help: "How to serve requests: adaptive, local, split or offload.") var mode: String = "adaptive"
    @Option(help: "How many Fashion-MNIST test images to send (0: stay online).") var samples: Int = 0
    @Option(help: "Requests per second (0: back to back).") var rate: Double = 0
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory
    @Option(
        help: "Inputs: fmnist (test set, accuracy reported), synthetic (seeded random images) or a folder of PNG/PGM files (predictions printed).")
    var source: String = "fmnist"
    @Option(help: "Folder for verified model artifacts, kept across restarts (\"none\": memory only).")
    var modelCache: String = AgentConfiguration.defaultModelCache
    @Option(help: "Broker username (the device id, as the ACL in deploy/ expects).") var username: String?
    @Option(help: "File whose first line is the broker password.") var passwordFile: String?

    func run() async throws {
        let inferenceMode = InferenceMode(rawValue: mode)
        guard inferenceMode != nil || mode == "adaptive" else { throw ValidationError("--mode must be adaptive, local, split or offload") }
        let deviceProfile = try DeviceProfile.load(profile)
        let agent = try Agent(
            AgentConfiguration(
                deviceID: id ?? "\(deviceProfile.name)-\(ProcessInfo.processInfo.processIdentifier)", profile: deviceProfile,
                brokerHost: host, brokerPort: port, username: username,
                password: try passwordFile.map { file in
                    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                        throw ValidationError("cannot read --password-file \(file)")
                    }
                    return String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
                }, modelCache: AgentConfiguration.modelCache(option: modelCache)))
        try await agent.start()
        try await agent.waitUntilReady()
        guard samples > 0 else {
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
        let input = try InputSource.named(source, datasetDirectory: dataset)
        try await agent.serveAndReport(input, samples: samples, mode: inferenceMode, rate: rate)
        await agent.stop()
    }
}
