import CleaveProtocol
import Foundation
import Testing

@testable import CleaveMQTT

/// Against a real Mosquitto started on a free loopback port.
@Suite struct MQTTClientTests {
    func waitFor(_ client: MQTTClient, seconds: Double = 5, _ match: @escaping @Sendable (MQTTEvent) -> Bool) async -> MQTTEvent? {
        await withTaskGroup(of: MQTTEvent?.self) { group in
            group.addTask {
                for await event in client.events where match(event) { return event }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    @Test func requestResponseWithV5Properties() async throws {
        let broker = try LocalBroker()
        let server = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "server"))
        let device = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "device"))
        try server.connect()
        try device.connect()
        #expect(await waitFor(server) { if case .connected = $0 { true } else { false } } != nil)
        #expect(await waitFor(device) { if case .connected = $0 { true } else { false } } != nil)
        try server.subscribe("$share/coordinators/cleave/v1/infer/+", qos: 1)
        try device.subscribe("cleave/v1/devices/d1/results", qos: 1)
        try await Task.sleep(for: .milliseconds(200))
        try device.publish(
            MQTTMessage(
                topic: "cleave/v1/infer/d1", payload: [1, 2, 3], qos: 1, responseTopic: "cleave/v1/devices/d1/results",
                correlationData: [0, 42], userProperties: ["codec": "uint8"]))
        guard case .message(let request)? = await waitFor(server, { if case .message = $0 { true } else { false } }) else {
            Issue.record("no request arrived")
            return
        }
        #expect(request.payload == [1, 2, 3])
        #expect(request.responseTopic == "cleave/v1/devices/d1/results")
        #expect(request.correlationData == [0, 42])
        #expect(request.userProperties["codec"] == "uint8")
        try server.publish(MQTTMessage(topic: request.responseTopic!, payload: [9], qos: 1, correlationData: request.correlationData))
        guard case .message(let reply)? = await waitFor(device, { if case .message = $0 { true } else { false } }) else {
            Issue.record("no reply arrived")
            return
        }
        #expect(reply.payload == [9])
        #expect(reply.correlationData == [0, 42])
    }

    /// With a session-expiry interval the broker keeps the subscription and the QoS 1 messages
    /// that arrive while the client is away; a clean session gets nothing.
    @Test func persistentSessionKeepsMessagesWhileAway() async throws {
        let broker = try LocalBroker()
        let sender = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "sender"))
        try sender.connect()
        #expect(await waitFor(sender) { if case .connected = $0 { true } else { false } } != nil)
        for (id, expiry) in [("keeper", 60), ("forgetter", nil)] as [(String, Int?)] {
            let first = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: id, sessionExpiry: expiry))
            try first.connect()
            #expect(await waitFor(first) { if case .connected = $0 { true } else { false } } != nil)
            try first.subscribe("box/\(id)", qos: 1)
            try await Task.sleep(for: .milliseconds(200))
            first.disconnect()
            try sender.publish(MQTTMessage(topic: "box/\(id)", payload: [7], qos: 1))
            try await Task.sleep(for: .milliseconds(200))
            let again = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: id, sessionExpiry: expiry))
            try again.connect()
            let message = await waitFor(again, seconds: 2) { if case .message = $0 { true } else { false } }
            if expiry != nil {
                guard case .message(let kept)? = message else {
                    Issue.record("the persistent session lost the message")
                    continue
                }
                #expect(kept.payload == [7] && kept.topic == "box/keeper")
            } else {
                #expect(message == nil, "a clean session starts empty")
            }
            again.disconnect()
        }
    }

    @Test func willIsPublishedWhenAClientVanishes() async throws {
        let broker = try LocalBroker()
        let watcher = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "watcher"))
        try watcher.connect()
        _ = await waitFor(watcher) { if case .connected = $0 { true } else { false } }
        try watcher.subscribe("cleave/v1/devices/+/state")
        let doomed = try MQTTClient(
            MQTTConfiguration(
                port: broker.port, clientID: "doomed", keepAlive: 5,
                will: .init(topic: "cleave/v1/devices/doomed/state", payload: Array("offline".utf8))))
        try doomed.connect()
        _ = await waitFor(doomed) { if case .connected = $0 { true } else { false } }
        doomed.abandonConnection()
        let will = await waitFor(watcher, seconds: 12) { if case .message = $0 { true } else { false } }
        guard case .message(let message)? = will else {
            Issue.record("the will was not published")
            return
        }
        #expect(message.topic == "cleave/v1/devices/doomed/state")
        #expect(message.payload == Array("offline".utf8))
    }

    @Test func connectingToAClosedPortReportsAnError() async throws {
        let port = try LocalBroker.freePort()
        let client = try MQTTClient(MQTTConfiguration(port: port, clientID: "lonely", reconnectDelay: (1, 1)))
        do {
            try client.connect()
            let event = await waitFor(client, seconds: 2) { if case .connected = $0 { true } else { false } }
            #expect(event == nil)
        } catch let error as MQTTError {
            #expect(error.description.contains("connect to 127.0.0.1"))
        }
    }

    @Test func missingBrokerBinaryIsExplained() {
        #expect(LocalBroker.findMosquitto() != nil, "install mosquitto: the integration tests need a real broker")
    }
}
