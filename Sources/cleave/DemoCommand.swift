import ArgumentParser
import CleaveAgent
import CleaveAgentCLI
import CleaveCoordinator
import CleaveDatasets
import CleaveFleet
import CleaveIdentity
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import CleaveTestbed
import Foundation
import Logging

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Split inference end to end: broker, coordinator and three agents on this machine.",
        discussion: """
            Without --broker, starts mosquitto from PATH on a free loopback port with a generated configuration. \
            Starts a coordinator and three agents with different device profiles, streams Fashion-MNIST test \
            images through split inference, then local and offload for comparison, and prints a table: \
            mode, accuracy, bytes per sample, latency p50/p95/p99, throughput. Everything it started is stopped \
            on exit or Ctrl-C.
            """)

    @Option(help: "Use this broker (HOST:PORT) instead of starting one.") var broker: BrokerAddress?
    @Option(help: "Model folder with manifest.json.") var model: String = "models/fmnist/c4"
    @Option(help: "Folder of device profiles.") var devices: String = "devices"
    @Option(help: "Test images per mode.") var samples: Int = 3000
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory
    @Flag(
        help: ArgumentHelp(
            "Run the demo as a deployed fleet would: a new fleet (CA, certificates, passwords, ACL, signing key), TLS only.",
            discussion:
                "Every member is enrolled; the broker takes only TLS clients with a fleet certificate and a password; the coordinator signs control messages and the agents refuse unsigned ones."
        ))
    var secure = false

    func validate() throws {
        if secure && broker != nil { throw ValidationError("--secure starts its own broker; leave out --broker") }
    }

    func run() async throws {
        let bundle = try ModelBundle(directory: model)
        let test = try FashionMNIST(split: .test, directory: dataset)
        let profiles = try ["raspberry-pi-zero-2w", "raspberry-pi-4b-4gb", "raspberry-pi-5-8gb"].map {
            try DeviceProfile.load("\(devices)/\($0).yaml")
        }
        var coordinatorConfiguration = CoordinatorConfiguration(id: "demo-coordinator")
        var agentConfigurations = profiles.enumerated().map { index, profile in
            AgentConfiguration(deviceID: "demo-\(index + 1)-\(profile.name)", profile: profile, threads: 1)
        }
        let testbed: Testbed
        var fleetDirectory: String?
        // The demo's fleet (its keys included) lives as long as the demo.
        defer { if let fleetDirectory { try? FileManager.default.removeItem(atPath: fleetDirectory) } }
        if secure {
            let fleet = try SecureDemoFleet(coordinator: coordinatorConfiguration.id, devices: agentConfigurations.map(\.deviceID))
            fleetDirectory = fleet.authority.directory
            testbed = try Testbed(startingBrokerWith: fleet.brokerConfiguration, allowAnonymous: false)
            try fleet.secure(&coordinatorConfiguration)
            for index in agentConfigurations.indices { try fleet.secure(&agentConfigurations[index]) }
            printNow(
                "secure: a new fleet in \(fleet.authority.directory): TLS with client certificates, \(agentConfigurations.count + 1) members enrolled, control messages signed by fleet key \(fleet.fingerprint)"
            )
        } else {
            testbed = try Testbed(broker: broker.map { ($0.host, $0.port) })
        }
        let coordinatorSettings = coordinatorConfiguration
        let agentSettings = agentConfigurations
        if let started = await testbed.localBroker {
            printNow("started mosquitto on 127.0.0.1:\(started.port)\(secure ? " (TLS only)" : "") (config in \(started.directory))")
        }
        let samples = min(self.samples, test.count)
        var logger = Logger(label: "cleave.demo")
        logger.logLevel = .notice
        do {
            try await testbed.run(logger: logger) { testbed in
                let coordinator = try await testbed.addCoordinator(coordinatorSettings, bundle: bundle)
                for configuration in agentSettings { try await testbed.addAgent(configuration) }
                try await testbed.waitUntilReady()
                printNow("coordinator and \(profiles.count) agents ready: \(await coordinator.onlineDevices.joined(separator: ", "))")
                print(
                    "model \(bundle.manifest.name): cut at \(bundle.manifest.cutTensor) \(bundle.manifest.cutShape), codec \(bundle.manifest.codec)")

                var rows: [RunSummary] = []
                for mode in [InferenceMode.split, .local, .offload] {
                    let started = ContinuousClock.now
                    let bar = ProgressBarBox(ProgressBar(mode.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0), total: samples))
                    let outcomes = await testbed.stream(count: samples, mode: mode, input: { test.image($0) }, progress: { await bar.update($0) })
                    let summary = RunSummary(
                        mode: mode, outcomes: outcomes, labels: Array(test.labels.prefix(outcomes.count)),
                        seconds: (ContinuousClock.now - started).seconds)
                    try Task.checkCancellation()
                    await bar.finish(String(format: "accuracy %.2f%%, %d failed", summary.accuracy * 100, summary.failures))
                    rows.append(summary)
                }
                print("")
                print(RunSummary.header)
                for row in rows { print(row.line) }
                let stats = await coordinator.statistics
                print("coordinator answered \(stats.answered), rejected \(stats.rejected), duplicates \(stats.duplicates)")
            }
        } catch TestbedError.interrupted {
            FileHandle.standardError.write(Data("demo: \(TestbedError.interrupted)\n".utf8))
            throw ExitCode(130)
        }
    }
}

/// `cleave demo --secure`'s fleet: made in a temporary folder, every member enrolled.
struct SecureDemoFleet {
    let authority: FleetAuthority
    let signingKey: FleetSigningKey
    let publicKey: FleetPublicKey

    init(coordinator: String, devices: [String]) throws {
        var authority = try FleetAuthority.create(directory: try SystemCall.makeTemporaryDirectory(prefix: "cleave-demo-fleet-"), hosts: [])
        // Mosquitto drops to its own user: it must reach the folder (the keys in it stay private).
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: authority.directory)
        try authority.enroll(coordinator, role: .coordinator)
        for device in devices { try authority.enroll(device) }
        self.authority = authority
        signingKey = try authority.signingKey
        publicKey = try authority.publicKey
    }

    var brokerConfiguration: String { authority.accessSettings + "\n" + authority.listenerSettings }
    var fingerprint: String { String(publicKey.hex.prefix(16)) }

    /// Member `id`'s username, password and TLS files.
    func login(_ id: String) throws -> (username: String, password: String, tls: MQTTConfiguration.TLS) {
        let member = try authority.credentials(of: id)
        return (
            member.id, member.password, MQTTConfiguration.TLS(caFile: member.caFile, certificateFile: member.certificateFile, keyFile: member.keyFile)
        )
    }

    func secure(_ configuration: inout CoordinatorConfiguration) throws {
        (configuration.username, configuration.password, configuration.tls) = try login(configuration.id)
        configuration.signingKey = signingKey
    }

    func secure(_ configuration: inout AgentConfiguration) throws {
        (configuration.username, configuration.password, configuration.tls) = try login(configuration.deviceID)
        configuration.fleetKey = publicKey
    }
}

actor ProgressBarBox {
    private var bar: ProgressBar
    init(_ bar: ProgressBar) { self.bar = bar }
    func update(_ done: Int) { bar.update(done) }
    func finish(_ summary: String) { bar.finish(summary) }
}
