import CleaveProtocol
import Foundation
import Testing

@testable import CleaveMQTT

/// The ACL shipped in deploy/mosquitto/acl, enforced by a real Mosquitto with passwords.
@Suite struct AccessControlTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path

    func connected(_ user: String, port: Int) async throws -> MQTTClient {
        let client = try MQTTClient(MQTTConfiguration(port: port, clientID: user, username: user, password: "secret-\(user)"))
        try client.connect()
        for await event in client.events {
            if case .connected = event { return client }
            if case .refused(let code) = event { throw MQTTError(code: Int32(code), operation: "log in as \(user)") }
        }
        throw MQTTError(code: -1, operation: "log in as \(user)")
    }

    /// Collects messages up to and including the first whose payload is `marker`, or for a
    /// minute if it never comes (a loaded CI machine is slow; a fixed short window made these
    /// tests fail there). The broker keeps one publisher's messages in order for a subscriber,
    /// so a message that the ACL should have dropped but let through, published before the
    /// marker by the same client, arrives before the marker and shows in the result.
    func messages(_ client: MQTTClient, until marker: [UInt8]) async -> [MQTTMessage] {
        await withTaskGroup(of: [MQTTMessage]?.self) { group in
            group.addTask {
                var received: [MQTTMessage] = []
                for await event in client.events {
                    guard case .message(let message) = event else { continue }
                    received.append(message)
                    if message.payload == marker { return received }
                }
                return received
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(60))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? []
        }
    }

    /// A Mosquitto with the shipped ACL and three users: coordinator, device-a, device-b.
    static func brokerWithShippedACL() throws -> LocalBroker {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-acl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let passwords = folder.appendingPathComponent("passwd").path
        for (index, user) in ["coordinator", "device-a", "device-b"].enumerated() {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/mosquitto_passwd")
            process.arguments = (index == 0 ? ["-c"] : []) + ["-b", passwords, user, "secret-\(user)"]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
        }
        let acl = folder.appendingPathComponent("acl").path
        try FileManager.default.copyItem(atPath: "\(Self.repository)/deploy/mosquitto/acl", toPath: acl)
        for path in [folder.path, passwords, acl] {
            try FileManager.default.setAttributes([.posixPermissions: path == folder.path ? 0o755 : 0o644], ofItemAtPath: path)
        }
        return try LocalBroker(extraConfiguration: "password_file \(passwords)\nacl_file \(acl)", allowAnonymous: false)
    }

    @Test func aDeviceCannotActAsAnotherOrReadItsResults() async throws {
        let broker = try Self.brokerWithShippedACL()

        let coordinator = try await connected("coordinator", port: broker.port)
        let deviceA = try await connected("device-a", port: broker.port)
        let deviceB = try await connected("device-b", port: broker.port)
        try coordinator.subscribe("$share/coordinators/cleave/v1/infer/+", qos: 1)
        try deviceA.subscribe("cleave/v1/devices/device-b/results", qos: 1)  // not allowed: must see nothing
        try deviceA.subscribe("cleave/v1/devices/device-a/results", qos: 1)
        try deviceB.subscribe("cleave/v1/devices/device-b/results", qos: 1)
        try await Task.sleep(for: .milliseconds(300))

        async let atCoordinator = messages(coordinator, until: [2])
        try deviceA.publish(MQTTMessage(topic: "cleave/v1/infer/device-b", payload: [1], qos: 1))  // impersonation: dropped
        try deviceA.publish(MQTTMessage(topic: "cleave/v1/infer/device-a", payload: [2], qos: 1))  // allowed
        let served = await atCoordinator
        #expect(served.map(\.topic) == ["cleave/v1/infer/device-a"], "device-a may publish only as itself")

        // [3] goes to device-b's results, then [4] to device-a's own: had device-a's
        // subscription to b's results been granted, [3] would reach it before [4].
        async let atA = messages(deviceA, until: [4])
        async let atB = messages(deviceB, until: [3])
        try coordinator.publish(MQTTMessage(topic: "cleave/v1/devices/device-b/results", payload: [3], qos: 1))
        try coordinator.publish(MQTTMessage(topic: "cleave/v1/devices/device-a/results", payload: [4], qos: 1))
        #expect(await atA.map(\.payload) == [[4]], "device-a must not read device-b's results")
        #expect(await atB.map(\.payload) == [[3]], "device-b reads its own results")
    }

    @Test func aFederatedClientSendsUpdatesOnlyAsItselfAndCannotPublishTheModel() async throws {
        let broker = try Self.brokerWithShippedACL()
        let coordinator = try await connected("coordinator", port: broker.port)
        let deviceA = try await connected("device-a", port: broker.port)
        let deviceB = try await connected("device-b", port: broker.port)
        try coordinator.subscribe(Topic.allFederatedUpdates(run: "r"), qos: 1)
        try coordinator.subscribe(Topic.allFederatedClients(run: "r"), qos: 1)
        try deviceB.subscribe(Topic.federatedModel(run: "r").path, qos: 1)
        try await Task.sleep(for: .milliseconds(300))

        // device-a's forbidden publications come before its allowed update [4]; once [4] is at
        // the coordinator the broker has dealt with all of them, and only then does the
        // coordinator publish the model [5], so a forbidden model [3] would reach b first.
        async let atCoordinator = messages(coordinator, until: [4])
        async let atB = messages(deviceB, until: [5])
        try deviceA.publish(MQTTMessage(topic: Topic.federatedUpdate(run: "r", device: "device-b").path, payload: [1], qos: 1))  // dropped
        try deviceA.publish(MQTTMessage(topic: Topic.federatedClient(run: "r", device: "device-b").path, payload: [2], qos: 1))  // dropped
        try deviceA.publish(MQTTMessage(topic: Topic.federatedModel(run: "r").path, payload: [3], qos: 1))  // dropped: only the coordinator
        try deviceA.publish(MQTTMessage(topic: Topic.federatedUpdate(run: "r", device: "device-a").path, payload: [4], qos: 1))  // allowed
        #expect(await atCoordinator.map(\.payload) == [[4]], "device-a may send updates only as itself")
        try coordinator.publish(MQTTMessage(topic: Topic.federatedModel(run: "r").path, payload: [5], qos: 1))
        #expect(await atB.map(\.payload) == [[5]], "only the coordinator publishes the global model")
    }

    /// A Mosquitto that knows one user, `user` with `password`, and lets no one else in.
    static func brokerWithOneUser(_ user: String, password: String) throws -> LocalBroker {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-acl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let passwords = folder.appendingPathComponent("passwd").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/mosquitto_passwd")
        process.arguments = ["-c", "-b", passwords, user, password]
        try process.run()
        process.waitUntilExit()
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: folder.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: passwords)
        return try LocalBroker(extraConfiguration: "password_file \(passwords)", allowAnonymous: false)
    }

    @Test func wrongPasswordIsRefused() async throws {
        let broker = try Self.brokerWithOneUser("device-a", password: "right")
        await #expect(throws: MQTTError.self) { _ = try await connected("device-a", port: broker.port) }
    }

    /// The same refusal through the event loop agent and coordinator use: an error that names
    /// the reason, at once, not a retry every few seconds for ever.
    @Test func aRefusedConnectionEndsTheWaitWithTheReason() async throws {
        let broker = try Self.brokerWithOneUser("device-a", password: "right")
        let client = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "device-a", username: "device-a", password: "wrong"))
        // Raced against a minute (a CI machine starting every suite at once is slow), so that
        // retrying for ever fails the test instead of hanging it.
        let outcome = await withTaskGroup(of: String?.self) { group in
            group.addTask {
                do {
                    _ = try await client.connect(deliveringEventsTo: { _ in })
                    return "connected"
                } catch {
                    return "\(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(60))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        let message = try #require(outcome, "still retrying after a minute")
        #expect(message.contains("bad user name or password") || message.contains("not authorized"), "\(message)")
    }
}
