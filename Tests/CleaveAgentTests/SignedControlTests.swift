import CleaveCodec
import CleaveIdentity
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveAgent

/// An agent pinned to the fleet key takes a control message only when the fleet key signed it
/// for this device's topic and it is not older than the one taken before.
@Suite struct SignedControlTests {
    let fleet = FleetSigningKey()

    func pinnedAgent(_ broker: InMemoryBroker, _ id: String, cache: String) throws -> Agent {
        let profile = try DeviceProfile.load("\(AgentTests.repository)/devices/generic.yaml")
        let configuration = AgentConfiguration(
            deviceID: id, profile: profile, threads: 1, modelCache: cache, fallbackToLocal: false, fleetKey: fleet.publicKey)
        return Agent(configuration, transport: broker.makeTransport(clientID: id, will: Agent.offlineState(id)))
    }

    /// The assignment as the coordinator would publish it, and the artifacts it names.
    func control(codec: CodecName = .int4, nonce: String? = nil) throws -> [UInt8] {
        var assignment = try ScriptedCoordinatorAssignment.make(try AgentTests.bundle.get())
        assignment.codec = codec
        return [UInt8](try JSONEncoder().encode(ControlMessage(assignment: assignment, nonce: nonce)))
    }

    func publishArtifacts(_ transport: InMemoryTransport) throws {
        let bundle = try AgentTests.bundle.get()
        try transport.publish(MQTTMessage(topic: Topic.model(sha256: bundle.manifest.full.sha256).path, payload: bundle.full, qos: 1, retain: true))
        try transport.publish(MQTTMessage(topic: Topic.model(sha256: bundle.manifest.head.sha256).path, payload: bundle.head, qos: 1, retain: true))
    }

    func refusals(_ agent: Agent, reach count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while await agent.statistics.refusedControl < count {
            guard ContinuousClock.now < deadline else { throw AgentError(description: "\(count) refusals not seen within 60 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func unsignedTamperedMisdirectedForeignAndReplayedControlIsRefused() async throws {
        // (The attacker's first four messages carry no nonce; they are refused before it matters.)
        let broker = InMemoryBroker()
        let cache = try SystemCall.makeTemporaryDirectory(prefix: "cleave-signed-")
        let attacker = broker.makeTransport(clientID: "attacker")
        try attacker.connect()
        try publishArtifacts(attacker)
        let topic = Topic.deviceControl(device: "s1").path
        var agent = try pinnedAgent(broker, "s1", cache: cache)
        try await agent.start()

        // Unsigned; signed by another key; signed for another device; altered after signing.
        try attacker.publish(MQTTMessage(topic: topic, payload: try control(), qos: 1))
        try attacker.publish(MQTTMessage(topic: topic, payload: try FleetSigningKey().seal(try control(), topic: topic, issued: 5), qos: 1))
        try attacker.publish(
            MQTTMessage(topic: topic, payload: try fleet.seal(try control(), topic: Topic.deviceControl(device: "s2").path, issued: 5), qos: 1))
        var altered = try fleet.seal(try control(codec: .uint8), topic: topic, issued: 5)
        let codec = try #require(altered.indices.first { altered[$0...].starts(with: Array("uint8".utf8)) })
        altered.replaceSubrange(codec..<(codec + 5), with: Array("float".utf8))
        try attacker.publish(MQTTMessage(topic: topic, payload: altered, qos: 1))
        try await refusals(agent, reach: 4)
        await #expect(throws: AgentError.self) { try await agent.waitUntilReady(timeout: .milliseconds(100)) }

        // The fleet's own message, for this process's nonce, is taken — also when its stamp is
        // older than one seen before (a coordinator whose clock was set back) — and the same
        // message again (a redelivery) is not a refusal.
        let current = try fleet.seal(try control(nonce: agent.nonce), topic: topic, issued: 2000)
        try attacker.publish(MQTTMessage(topic: topic, payload: current, qos: 1, retain: true))
        try await agent.waitUntilReady(timeout: .seconds(60))
        try attacker.publish(MQTTMessage(topic: topic, payload: current, qos: 1))
        try attacker.publish(MQTTMessage(topic: topic, payload: try fleet.seal(try control(nonce: agent.nonce), topic: topic, issued: 10), qos: 1))
        // A genuine message without this process's nonce (recorded from another start) is refused.
        try attacker.publish(MQTTMessage(topic: topic, payload: try fleet.seal(try control(nonce: "00"), topic: topic, issued: 3000), qos: 1))
        try await refusals(agent, reach: 5)
        try await Task.sleep(for: .milliseconds(100))
        #expect(await agent.statistics.refusedControl == 5, "only the message for another start is refused")
        await agent.stop()

        // A new process of the same device (a new nonce): the retained message, genuine but sent
        // to the previous start, is a replay.
        agent = try pinnedAgent(broker, "s1", cache: cache)
        try await agent.start()
        try await refusals(agent, reach: 1)
        await #expect(throws: AgentError.self) { try await agent.waitUntilReady(timeout: .milliseconds(100)) }
        await agent.stop()
    }

    /// Without a fleet key (a development broker) plain control messages still work, and a
    /// signed one is not mistaken for JSON.
    @Test func anUnpinnedAgentTakesPlainControl() async throws {
        let broker = InMemoryBroker()
        let coordinator = broker.makeTransport(clientID: "coordinator")
        try coordinator.connect()
        try publishArtifacts(coordinator)
        try coordinator.publish(MQTTMessage(topic: Topic.deviceControl(device: "u1").path, payload: try control(), qos: 1, retain: true))
        let profile = try DeviceProfile.load("\(AgentTests.repository)/devices/generic.yaml")
        let agent = Agent(
            AgentConfiguration(deviceID: "u1", profile: profile, threads: 1, modelCache: nil),
            transport: broker.makeTransport(clientID: "u1", will: Agent.offlineState("u1")))
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        await agent.stop()
    }
}

/// The request journal (`--queue-dir`): what a crashed process left is sent again and its
/// answer recorded; a resolved request leaves nothing behind.
@Suite struct RequestJournalTests {
    func agent(_ broker: InMemoryBroker, _ id: String, journal: String, fallback: Bool = false, timeout: Duration = .seconds(60)) throws -> Agent {
        let profile = try DeviceProfile.load("\(AgentTests.repository)/devices/generic.yaml")
        let configuration = AgentConfiguration(
            deviceID: id, profile: profile, threads: 1, requestTimeout: timeout, modelCache: nil, fallbackToLocal: fallback,
            retryInterval: .milliseconds(50), queueDirectory: journal)
        return Agent(configuration, transport: broker.makeTransport(clientID: id, will: Agent.offlineState(id)))
    }

    func files(_ folder: String) -> [String] { ((try? SystemCall.listDirectory(folder)) ?? []).filter { $0.hasSuffix(".request") } }

    @Test func aCrashedProcessesRequestsAreSentAgainAndAnswered() async throws {
        let broker = InMemoryBroker()
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-journal-")
        // What a process killed with two requests in flight leaves: their frames, on disk.
        let bundle = try AgentTests.bundle.get()
        let features = Tensor(shape: [1] + bundle.manifest.cutShape, scalars: [Float](repeating: 0.5, count: bundle.manifest.cutShape.reduce(1, *)))
        let journal = try RequestJournal(directory: folder)
        for id: UInt64 in [901, 902] {
            let frame = BottleneckCodec.encode(features, requestID: id, options: FrameOptions(codec: .int4))
            #expect(
                journal.record(
                    id,
                    messages: [
                        MQTTMessage(
                            topic: Topic.infer(device: "j1").path, payload: frame, qos: 1, responseTopic: Topic.results(device: "j1").path,
                            correlationData: RequestID.encode(id))
                    ]) == nil)
        }
        let coordinator = try AgentTests.ScriptedCoordinator(broker: broker, device: "j1") { id, _ in [Int(id % 10)] }
        let agent = try agent(broker, "j1", journal: folder)
        try await agent.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while await agent.statistics.recovered < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await agent.statistics.recovered == 2)
        let answers = String(decoding: try SystemCall.readFile("\(folder)/answers.jsonl"), as: UTF8.self).split(separator: "\n")
        #expect(answers.count == 2 && answers.contains { $0.contains("\"requestID\":901") && $0.contains("\"prediction\":1") })
        #expect(files(folder).isEmpty, "recovered requests leave the journal")

        // A request of this process: on disk while it waits, gone once answered.
        try await agent.waitUntilReady(timeout: .seconds(60))
        let outcome = await agent.infer(AgentTests.image, mode: .split)
        #expect(outcome.prediction != nil, "\(outcome.error ?? "")")
        #expect(files(folder).isEmpty)
        await agent.stop()
        _ = coordinator
    }

    @Test func anUnansweredRequestIsOnDiskUntilItIsResolved() async throws {
        let broker = InMemoryBroker()
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-journal-")
        // The coordinator never answers.
        let coordinator = try AgentTests.ScriptedCoordinator(broker: broker, device: "j2") { _, _ in [] }
        let agent = try agent(broker, "j2", journal: folder, timeout: .milliseconds(600))
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        let waiting = Task { await agent.infer(AgentTests.image, mode: .split) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(files(folder).count == 1, "written before it is published")
        let outcome = await waiting.value
        #expect(outcome.failure != nil && files(folder).isEmpty, "a failed request is resolved: nothing to send again")
        await agent.stop()
        _ = coordinator
    }
}
