import CleaveCodec
import CleaveDatasets
import CleaveFleet
import CleaveMQTT
import CleaveNetem
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTestbed
import CleaveTrain
import Foundation
import Testing

@testable import CleaveAgent

#if canImport(Glibc)
    import Glibc
#endif

/// The fault suite: a real Mosquitto, a coordinator in its own process (`cleave coordinator`,
/// so that `kill -9` is real), and an adaptive agent (board compute emulated at 10× the
/// generic profile's time, so split beats local on a good link) connected through a netem
/// proxy. Requests go out at 20 per second while one fault is injected and healed; every
/// outcome is checked against the whole model and the offline split path. The tests run one
/// after the other so that their timing does not depend on each other's load.
///
/// Each test prints one line of the table in `docs/results.md`.
@Suite(.serialized) struct FaultSuiteTests {
    @Test func brokerKilledAndRestarted() async throws {
        let rig = try await FaultRig(name: "broker")
        let tally = try await rig.drive(seconds: 14) { second in
            if second == 2 { try await rig.testbed.killBroker() }
            if second == 5 { try await rig.testbed.restartBroker() }
        }
        tally.report("broker kill -9 at 2 s, restarted at 5 s")
        tally.expectNothingLost()
        #expect(tally.localDuringFault > 0, "requests during the outage are answered locally")
        #expect(tally.remoteAfterRecovery > 0, "the agent returns to the coordinator after the broker is back")
        #expect(await rig.agent.statistics.connects >= 2)
        await rig.stop()
    }

    @Test func coordinatorKilledAndRestarted() async throws {
        let rig = try await FaultRig(name: "coordinator")
        let tally = try await rig.drive(seconds: 14) { second in
            if second == 2 { rig.coordinator?.kill9() }
            if second == 5 { rig.coordinator = try rig.coordinatorProcess(id: "fault-coordinator-2") }
        }
        tally.report("coordinator kill -9 at 2 s, new one at 5 s")
        // A batch the dead coordinator finished but had not answered may be computed again.
        tally.expectNothingLost(computedTwiceAtMost: 16)
        #expect(tally.localDuringFault > 0)
        #expect(tally.remoteAfterRecovery > 0)
        await rig.stop()
    }

    /// Split only, no local fallback, 15 s timeout: the retries, the offline queue and the
    /// coordinator's result cache alone carry every request through the broker's restart.
    @Test func brokerKilledAndRestartedSplitOnly() async throws {
        let rig = try await FaultRig(name: "broker-split", fixedMode: .split)
        let tally = try await rig.drive(seconds: 10) { second in
            if second == 2 { try await rig.testbed.killBroker() }
            if second == 5 { try await rig.testbed.restartBroker() }
        }
        tally.report("split only, no fallback: broker kill -9 at 2 s, restarted at 5 s")
        tally.expectNothingLost()
        #expect(tally.local == 0 && tally.remoteAfterRecovery > 0)
        #expect(tally.remoteDuringFault > 0, "requests made while the broker was gone wait in the offline queue and are answered")
        #expect(tally.agent.connects >= 2)
        await rig.stop()
    }

    /// Batches take 300 ms here, so that the kill lands in one: its requests are sent again
    /// and computed by the next coordinator. A batch the dead one finished but had not answered
    /// yet would be computed twice (at most one batch, 16 requests); the request logs count it.
    @Test func coordinatorKilledAndRestartedSplitOnly() async throws {
        let rig = try await FaultRig(name: "coordinator-split", fixedMode: .split, batchMs: 300)
        let tally = try await rig.drive(seconds: 10) { second in
            if second == 2 { rig.coordinator?.kill9() }
            if second == 5 { rig.coordinator = try rig.coordinatorProcess(id: "fault-coordinator-2") }
        }
        tally.report("split only, no fallback, 300 ms batches: coordinator kill -9 mid-batch at 2 s, new one at 5 s")
        tally.expectNothingLost(computedTwiceAtMost: 16)
        #expect(tally.local == 0 && tally.remoteAfterRecovery > 0)
        #expect(tally.agent.retries > 0, "requests the dead coordinator took are sent again")
        await rig.stop()
    }

    /// Two coordinators share the load (300 ms batches, so that the kill lands in one); one is
    /// killed and not replaced: what the broker had handed it is sent again by the agent and
    /// answered by the other.
    @Test func oneOfTwoCoordinatorsKilledSplitOnly() async throws {
        let rig = try await FaultRig(name: "two-coordinators", fixedMode: .split, batchMs: 300)
        let survivor = try rig.coordinatorProcess(id: "fault-coordinator-b")
        let tally = try await rig.drive(seconds: 10) { second in
            if second == 2 { rig.coordinator?.kill9() }
        }
        tally.report("split only, no fallback, 300 ms batches: one of two coordinators kill -9 mid-batch at 2 s")
        tally.expectNothingLost(computedTwiceAtMost: 16)
        #expect(tally.agent.retries > 0, "what the killed coordinator held is sent again")
        #expect(tally.local == 0 && tally.remoteAfterRecovery > 0, "the survivor answers everything after the kill")
        await rig.stop()
        survivor.kill9()
    }

    @Test func linkDownThirtySeconds() async throws {
        let rig = try await FaultRig(name: "link")
        let tally = try await rig.drive(seconds: 56, faultEnds: 32) { second in
            if second == 2 { try rig.setLink(up: false) }
            if second == 32 { try rig.setLink(up: true) }
        }
        tally.report("link down (held) 2–32 s")
        tally.expectNothingLost()
        #expect(tally.localDuringFault > 0)
        #expect(tally.remoteAfterRecovery > 0)
        await rig.stop()
    }

    @Test func bandwidthCutTo50Kbits() async throws {
        let rig = try await FaultRig(name: "slow")
        let tally = try await rig.drive(seconds: 22, faultEnds: 12) { second in
            if second == 2 { try rig.setLink(rate: 50_000) }
            if second == 12 { try rig.setLink(rate: nil) }
        }
        tally.report("50 kbit/s both ways 2–12 s")
        tally.expectNothingLost()
        #expect(tally.remoteAfterRecovery > 0)
        await rig.stop()
    }

    @Test func agentRestarted() async throws {
        let rig = try await FaultRig(name: "agent")
        let tally = try await rig.drive(seconds: 10, faultEnds: 4) { second in
            if second == 3 { try await rig.restartAgent() }
        }
        tally.report("agent drained, stopped and restarted at 3 s")
        tally.expectNothingLost()
        #expect(tally.remoteAfterRecovery > 0)
        await rig.stop()
    }
}

// MARK: - The rig

/// `cleave coordinator` as a child process.
final class CoordinatorProcess: Sendable {
    let process: Process

    /// `batchMs`: every batch takes at least that long (`--emulate-batch-ms`), so that a kill
    /// lands in the middle of one.
    init(port: Int, id: String, member: String? = nil, requestLog: String? = nil, batchMs: Double? = nil) throws {
        let products =
            Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }?.deletingLastPathComponent()
            ?? URL(fileURLWithPath: ".build/debug")
        process = Process()
        process.executableURL = products.appendingPathComponent("cleave")
        process.arguments =
            ["coordinator", "--broker", "127.0.0.1:\(port)", "--model", SplitServingTests.modelFolder, "--id", id]
            + (member.map { ["--member", $0] } ?? []) + (requestLog.map { ["--request-log", $0] } ?? [])
            + (batchMs.map { ["--emulate-batch-ms", "\($0)"] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// SIGKILL: no clean disconnect, no last words.
    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { kill9() }
    }
}

/// A testbed (broker, the agent behind its proxy) and a coordinator process for one fault test,
/// deployed as `deploy/` deploys: a fleet of its own (TLS with client certificates, passwords,
/// the fleet's ACL, client id = username, control messages signed and the agent pinned to the
/// key) and a broker with persistence, which a `kill -9` and restart keep.
final class FaultRig: @unchecked Sendable {
    let testbed: Testbed
    var fleet: FleetAuthority
    let port: Int
    // Changed only by the fault callbacks, which `drive` runs one at a time on its own task.
    var coordinator: CoordinatorProcess?
    var agent: Agent
    let proxy: NetemProxy
    let name: String
    let cache: String
    /// Where the coordinators write what they computed (`--request-log`), one file each.
    let requestLogs: String
    let references: [(whole: Int, split: Int)]
    let images: [Tensor]
    /// Nil: the adaptive policy with local fallback; a mode: that mode only, no fallback.
    let fixedMode: InferenceMode?
    /// The coordinators' emulated batch time (nil: as fast as they can).
    let batchMs: Double?

    init(name: String, fixedMode: InferenceMode? = nil, batchMs: Double? = nil) async throws {
        self.name = name
        self.fixedMode = fixedMode
        self.batchMs = batchMs
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-fault-fleet-")
        chmod(folder, 0o777)
        fleet = try FleetAuthority.create(directory: "\(folder)/fleet", hosts: ["127.0.0.1"])
        chmod(fleet.directory, 0o755)
        for coordinator in ["fault-coordinator-1", "fault-coordinator-2", "fault-coordinator-b"] { try fleet.enroll(coordinator, role: .coordinator) }
        try fleet.enroll("fault-\(name)")
        try SystemCall.makeDirectories("\(folder)/persistence")
        chmod("\(folder)/persistence", 0o777)
        testbed = try Testbed(
            startingBrokerWith: fleet.accessSettings + "\n" + fleet.listenerSettings
                + "\npersistence true\npersistence_location \(folder)/persistence/\nautosave_interval 60",
            allowAnonymous: false)
        port = testbed.brokerPort
        requestLogs = "\(folder)/computed"
        try SystemCall.makeDirectories(requestLogs)
        coordinator = try CoordinatorProcess(
            port: port, id: "fault-coordinator-1", member: fleet.memberDirectory("fault-coordinator-1"),
            requestLog: "\(requestLogs)/fault-coordinator-1.log", batchMs: batchMs)
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fault-\(UUID().uuidString)").path
        self.cache = cache
        agent = try await testbed.addAgent(try Self.agentConfiguration(name: name, cache: cache, fixed: fixedMode != nil, fleet: fleet), proxy: name)
        proxy = try #require(await testbed.members.first?.proxy)
        try await testbed.waitUntilReady()

        let bundle = try ModelBundle(directory: SplitServingTests.modelFolder)
        let test = try FashionMNIST(split: .test)
        images = (0..<100).map { test.image($0) }
        references = try Self.references(bundle, images)
    }

    static func agentConfiguration(name: String, cache: String, fixed: Bool, fleet: FleetAuthority) throws -> AgentConfiguration {
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        let login = try fleet.credentials(of: "fault-\(name)")
        return AgentConfiguration(
            deviceID: login.id, profile: profile, threads: 1, requestTimeout: .seconds(fixed ? 15 : 2), username: login.id, password: login.password,
            modelCache: cache, fallbackToLocal: !fixed, offlineQueueLimit: fixed ? 512 : 64, computeEmulation: 10,
            tls: MQTTConfiguration.TLS(caFile: login.caFile, certificateFile: login.certificateFile, keyFile: login.keyFile),
            fleetKey: try fleet.publicKey)
    }

    /// A coordinator process logged in as the fleet member `id`.
    func coordinatorProcess(id: String) throws -> CoordinatorProcess {
        try CoordinatorProcess(port: port, id: id, member: fleet.memberDirectory(id), requestLog: "\(requestLogs)/\(id).log", batchMs: batchMs)
    }

    /// Frames computed by all the coordinators so far, and how many requests were computed more
    /// than once, from their request logs.
    func computations() -> (computed: Int, twice: Int) {
        RequestLogs.tally(((try? SystemCall.listDirectory(requestLogs)) ?? []).map { "\(requestLogs)/\($0)" })
    }

    /// The whole model's prediction and the offline split path's (head, codec, tail) per image.
    static func references(_ bundle: ModelBundle, _ images: [Tensor]) throws -> [(whole: Int, split: Int)] {
        let whole = InferenceSession(model: try Model(serialized: Data(bundle.full)), threads: 1)
        let head = InferenceSession(model: try Model(serialized: Data(bundle.head)), threads: 1)
        let tail = InferenceSession(model: try Model(serialized: Data(bundle.tail)), threads: 1)
        let manifest = bundle.manifest
        let codec = try #require(FrameCodec(named: manifest.codec))
        return try images.map { image in
            let features = try #require(try head.run([manifest.inputName: image])[manifest.cutTensor])
            let frame = BottleneckCodec.encode(features, requestID: 0, options: FrameOptions(codec: codec, zstdLevel: manifest.zstdLevel))
            let decoded = try BottleneckCodec.decode(frame, expectedShape: features.shape).tensor
            let wholeLogits = try #require(try whole.run([manifest.inputName: image]).values.first)
            let splitLogits = try #require(try tail.run([manifest.cutTensor: decoded]).values.first)
            return (Classification.top(wholeLogits.scalars(as: Float.self)).index, Classification.top(splitLogits.scalars(as: Float.self)).index)
        }
    }

    func setLink(up: Bool = true, rate: Double? = nil) throws {
        var conditions = LinkConditions(rate: rate)
        conditions.up = up
        try proxy.setConditions(uplink: conditions, downlink: conditions)
    }

    /// A planned restart: no new requests, the waiting ones answered, then a new process's agent
    /// (same device id and model cache).
    func restartAgent() async throws {
        agent = try await testbed.restart(agent, as: try Self.agentConfiguration(name: name, cache: cache, fixed: fixedMode != nil, fleet: fleet))
    }

    /// Sends 20 requests per second for `seconds`, each on its own task, calling `fault` at
    /// every whole second (before that second's requests).
    func drive(seconds: Int, faultStarts: Double = 2, faultEnds: Double = 5, fault: (Int) async throws -> Void) async throws -> FaultTally {
        let start = ContinuousClock.now
        let perSecond = 20
        return try await withThrowingTaskGroup(of: (Int, Double, AgentOutcome).self) { group in
            var index = 0
            for second in 0..<seconds {
                try await fault(second)
                for slot in 0..<perSecond {
                    try await Task.sleep(until: start + .seconds(second) + .milliseconds(slot * 1000 / perSecond), clock: .continuous)
                    let agent = self.agent
                    let image = images[index % images.count]
                    let item = index
                    let sent = (ContinuousClock.now - start).seconds
                    let mode = fixedMode
                    group.addTask {
                        guard let mode else { return (item, sent, await agent.infer(image)) }
                        return (item, sent, await agent.infer(image, mode: mode))
                    }
                    index += 1
                }
            }
            var tally = FaultTally(name: name, faultStarts: faultStarts, faultEnds: faultEnds)
            for try await (item, sent, outcome) in group {
                tally.add(outcome, sentAt: sent, reference: references[item % references.count])
            }
            tally.agent = await agent.statistics
            // Answers a fallback stopped waiting for may still be computing: let them finish.
            try await Task.sleep(for: .seconds(1))
            (tally.computed, tally.computedTwice) = computations()
            return tally
        }
    }

    func stop() async {
        await testbed.stop()
        coordinator?.kill9()
        try? FileManager.default.removeItem(atPath: cache)
    }
}

/// What coordinators started with `--request-log` computed.
enum RequestLogs {
    /// Frames computed in all of `files`, and how many requests (by request key: device, id and
    /// frame CRC — the line's first field) were computed more than once.
    static func tally(_ files: [String]) -> (computed: Int, twice: Int) {
        var count: [Substring: Int] = [:]
        for file in files {
            let text = String(decoding: (try? SystemCall.readFile(file)) ?? [], as: UTF8.self)
            for line in text.split(separator: "\n") { count[line.split(separator: " ")[0], default: 0] += 1 }
        }
        return (count.values.reduce(0, +), count.values.filter { $0 > 1 }.count)
    }
}

/// The counts the fault suite reports.
struct FaultTally {
    let name: String
    let faultStarts: Double
    let faultEnds: Double
    var sent = 0
    var remote = 0
    var local = 0
    var fallbacks = 0
    var lost = 0
    var wrong = 0
    var duplicates = 0
    /// Frames the coordinators computed, and requests they computed more than once.
    var computed = 0
    var computedTwice = 0
    var localDuringFault = 0
    var remoteAfterRecovery = 0
    var remoteDuringFault = 0
    var seen: Set<UInt64> = []
    var errors: [String] = []
    var agent = AgentStatistics()

    mutating func add(_ outcome: AgentOutcome, sentAt: Double, reference: (whole: Int, split: Int)) {
        sent += 1
        if !seen.insert(outcome.requestID).inserted { duplicates += 1 }
        guard let prediction = outcome.prediction else {
            lost += 1
            if errors.count < 3 { errors.append(outcome.error ?? "?") }
            return
        }
        if prediction != reference.whole && prediction != reference.split { wrong += 1 }
        if outcome.mode == .local {
            local += 1
            if outcome.fallback != nil { fallbacks += 1 }
            if sentAt >= faultStarts && sentAt < faultEnds { localDuringFault += 1 }
        } else {
            remote += 1
            if sentAt >= faultEnds { remoteAfterRecovery += 1 }
            if sentAt >= faultStarts && sentAt < faultEnds { remoteDuringFault += 1 }
        }
    }

    /// No request lost, none delivered twice, none wrong, and none computed twice unless
    /// `computedTwiceAtMost` says how many a fault may cause (a coordinator killed with work
    /// done whose answers never left it).
    func expectNothingLost(computedTwiceAtMost allowed: Int = 0) {
        #expect(sent > 0)
        #expect(computed > 0, "\(name): the request logs show no computation")
        #expect(computedTwice <= allowed, "\(name): \(computedTwice) requests computed twice (allowed \(allowed))")
        #expect(lost == 0, "\(name): \(lost) requests lost: \(errors)")
        #expect(duplicates == 0, "\(name): a request id answered twice")
        #expect(wrong == 0, "\(name): \(wrong) answers match neither the whole model nor the split path")
    }

    func report(_ fault: String) {
        print(
            "fault suite | \(fault) | sent \(sent) | remote \(remote) | local \(local) (fallbacks \(fallbacks)) | lost \(lost) "
                + "| computed twice \(computedTwice) of \(computed) | delivered twice \(duplicates) | wrong \(wrong) | retries \(agent.retries) | late/duplicate answers dropped "
                + "\(agent.droppedAnswers) | connects \(agent.connects)")
    }
}
