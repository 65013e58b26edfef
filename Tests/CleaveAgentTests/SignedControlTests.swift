import CleaveIdentity
import CleaveProtocol
import CleaveSupport
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
    func control(codec: CodecName = .int4) throws -> [UInt8] {
        var assignment = try ScriptedCoordinatorAssignment.make(try AgentTests.bundle.get())
        assignment.codec = codec
        return [UInt8](try JSONEncoder().encode(ControlMessage(assignment: assignment)))
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

        // The fleet's own message, issued at 2000, is taken; a recorded older one (1000) is not,
        // neither now nor after a restart; the same message again (a redelivery) is taken.
        let old = try fleet.seal(try control(codec: .uint8), topic: topic, issued: 1000)
        let current = try fleet.seal(try control(), topic: topic, issued: 2000)
        try attacker.publish(MQTTMessage(topic: topic, payload: current, qos: 1, retain: true))
        try await agent.waitUntilReady(timeout: .seconds(60))
        try attacker.publish(MQTTMessage(topic: topic, payload: current, qos: 1))
        try attacker.publish(MQTTMessage(topic: topic, payload: old, qos: 1))
        try await refusals(agent, reach: 5)
        #expect(await agent.statistics.refusedControl == 5, "the redelivered current message is not a refusal")
        await agent.stop()

        try attacker.publish(MQTTMessage(topic: topic, payload: old, qos: 1, retain: true))
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
