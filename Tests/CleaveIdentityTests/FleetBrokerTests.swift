import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import Foundation
import Testing

@testable import CleaveFleet

/// A fleet made by `FleetAuthority` in front of a real Mosquitto: its TLS listener, password
/// file and ACL let enrolled members in and keep everyone else out.
@Suite struct FleetBrokerTests {
    enum Outcome: Sendable {
        case connected(MQTTClient)
        case failed(String)
    }

    struct Fleet {
        var authority: FleetAuthority
        let broker: LocalBroker
    }

    static func fleet(members: [(String, FleetAuthority.Role)]) throws -> Fleet {
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-fleet-")
        chmod(folder, 0o755)
        var authority = try FleetAuthority.create(directory: folder, hosts: ["127.0.0.1"])
        for (id, role) in members { try authority.enroll(id, role: role) }
        let broker = try LocalBroker(extraConfiguration: authority.accessSettings + "\n" + authority.listenerSettings, allowAnonymous: false)
        return Fleet(authority: authority, broker: broker)
    }

    /// Connects as `user` with the member folder's files (or the overrides), returning the
    /// client once connected or the error that ended the attempt.
    static func connect(
        _ fleet: Fleet, as user: String, clientID: String? = nil, password: String? = nil, caFile: String? = nil,
        certificate: (String, String)?? = .none, tls: Bool = true
    ) async -> Outcome {
        let folder = fleet.authority.memberDirectory(user)
        let storedPassword = (try? SystemCall.readFile("\(folder)/password")).map { String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace } }
        let files = certificate ?? ("\(folder)/\(user).crt", "\(folder)/\(user).key")
        let settings = MQTTConfiguration.TLS(
            caFile: caFile ?? "\(fleet.authority.directory)/ca.crt", certificateFile: files?.0, keyFile: files?.1)
        do {
            let client = try MQTTClient(
                MQTTConfiguration(
                    port: fleet.broker.port, clientID: clientID ?? user, username: user, password: password ?? storedPassword ?? "none",
                    tls: tls ? settings : nil))
            try client.connect()
            // The first event decides: a TLS or TCP failure shows as a disconnection before any
            // connection (libmosquitto would then retry for ever), a refusal as its reason.
            return await withTaskGroup(of: Outcome?.self) { group in
                group.addTask {
                    for await event in client.events {
                        switch event {
                        case .connected: return .connected(client)
                        case .refused(let code): return .failed(ConnectionRefused(reasonCode: code).description)
                        case .disconnected(let code): return .failed("disconnected before connecting (code \(code))")
                        case .message: continue
                        }
                    }
                    return .failed("no events")
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(20))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                if case .connected = first {} else { client.disconnect() }
                return first ?? .failed("no answer within 20 s")
            }
        } catch {
            return .failed("\(error)")
        }
    }

    @Test func enrolledMembersConnectOverTLS() async throws {
        let fleet = try Self.fleet(members: [("coordinator-1", .coordinator), ("pi-1", .device)])
        for member in ["coordinator-1", "pi-1"] {
            guard case .connected = await Self.connect(fleet, as: member) else {
                Issue.record("\(member) could not connect: \(await Self.connect(fleet, as: member))")
                continue
            }
        }
        let acl = String(decoding: try SystemCall.readFile("\(fleet.authority.directory)/acl"), as: UTF8.self)
        #expect(acl.contains("user coordinator-1\ntopic readwrite cleave/v1/#") && !acl.contains("user pi-1"))
    }

    /// The attacks of the security table that the broker itself stops.
    @Test func outsidersRevokedMembersPlainTextAndForeignCertificatesAreRefused() async throws {
        var fleet = try Self.fleet(members: [("pi-1", .device), ("pi-2", .device)])

        // A member's password without its certificate (a stolen password), and an unenrolled
        // name with a real certificate.
        guard case .failed(let noCertificate) = await Self.connect(fleet, as: "pi-1", certificate: .some(.none)) else {
            Issue.record("pi-1's password without a certificate connected")
            return
        }
        #expect(!noCertificate.isEmpty)
        let pi1 = fleet.authority.memberDirectory("pi-1")
        guard
            case .failed(let unknownUser) = await Self.connect(
                fleet, as: "stranger", password: "guess", certificate: ("\(pi1)/pi-1.crt", "\(pi1)/pi-1.key"))
        else { Issue.record("an unenrolled username connected"); return }
        #expect(unknownUser.contains("not authorized") || unknownUser.contains("bad user name or password"), "\(unknownUser)")

        // Plain text on the TLS port.
        guard case .failed = await Self.connect(fleet, as: "pi-1", tls: false) else { Issue.record("plain MQTT reached the TLS listener"); return }

        // A client that trusts another CA (a man in the middle's view) and a certificate from another CA.
        let other = try FleetAuthority.create(directory: try SystemCall.makeTemporaryDirectory(prefix: "cleave-other-fleet-"), hosts: [])
        guard case .failed(let wrongCA) = await Self.connect(fleet, as: "pi-1", caFile: "\(other.directory)/ca.crt") else {
            Issue.record("a client trusting another CA accepted the broker")
            return
        }
        #expect(wrongCA.contains("code 8"), "a TLS error (MOSQ_ERR_TLS) at once, not a silent retry: \(wrongCA)")
        var foreign = other
        let foreignFolder = try foreign.enroll("pi-1")
        guard case .failed = await Self.connect(fleet, as: "pi-1", certificate: ("\(foreignFolder)/pi-1.crt", "\(foreignFolder)/pi-1.key")) else {
            Issue.record("a certificate from another CA was accepted")
            return
        }

        // Revoked: its password entry goes; once the broker reloads, its login fails.
        guard case .connected = await Self.connect(fleet, as: "pi-2") else { Issue.record("pi-2 could not connect before revocation"); return }
        let savedPassword = String(decoding: try SystemCall.readFile("\(fleet.authority.memberDirectory("pi-2"))/password"), as: UTF8.self)
        try fleet.authority.revoke("pi-2")
        fleet.broker.reload()
        try await Task.sleep(for: .milliseconds(500))
        let pi2Certificate = try Self.copyCertificate(of: "pi-1", in: fleet)
        guard
            case .failed(let revoked) = await Self.connect(
                fleet, as: "pi-2", password: savedPassword.filter { !$0.isWhitespace }, certificate: pi2Certificate)
        else { Issue.record("a revoked device connected"); return }
        #expect(revoked.contains("not authorized") || revoked.contains("bad user name or password"), "\(revoked)")
        #expect(throws: FleetError.self) { try fleet.authority.revoke("pi-2") }

        // The broker's log names each refusal (the security table in docs/results.md quotes them).
        let log = String(decoding: try SystemCall.readFile("\(fleet.broker.directory)/mosquitto.log"), as: UTF8.self)
        for line in [
            "peer did not return a certificate", "disconnected, not authorised", "wrong version number", "certificate verify failed",
        ] {
            #expect(log.contains(line), "the broker's log says '\(line)'")
        }
    }

    /// A still-valid client certificate (a revoked board keeps its files).
    static func copyCertificate(of member: String, in fleet: Fleet) throws -> (String, String) {
        let folder = fleet.authority.memberDirectory(member)
        return ("\(folder)/\(member).crt", "\(folder)/\(member).key")
    }

    /// A device that connects with the coordinator's client id gets its own session (the broker
    /// replaces the id with the username): the coordinator stays connected and keeps receiving.
    @Test func aClientIDTakeoverDoesNotDisconnectTheCoordinator() async throws {
        let fleet = try Self.fleet(members: [("coordinator-1", .coordinator), ("pi-1", .device)])
        guard case .connected(let coordinator) = await Self.connect(fleet, as: "coordinator-1") else {
            Issue.record("the coordinator could not connect")
            return
        }
        try coordinator.subscribe("cleave/v1/infer/+", qos: 1)
        try await Task.sleep(for: .milliseconds(300))
        guard case .connected(let impostor) = await Self.connect(fleet, as: "pi-1", clientID: "coordinator-1") else {
            Issue.record("pi-1 could not connect at all")
            return
        }
        try impostor.publish(MQTTMessage(topic: "cleave/v1/infer/pi-1", payload: [9], qos: 1))
        let received = await withTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                for await event in coordinator.events {
                    if case .message(let message) = event { return message.payload }
                    if case .disconnected = event { return nil }
                }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        #expect(received == [9], "the coordinator's session survives a client that claims its id")
    }

    /// The shipped broker configuration is the fleet's: the same listener lines (with the fleet
    /// in /etc/cleave/fleet) and the same ACL patterns as deploy/mosquitto/acl, so that the tests
    /// against a fleet's broker are tests of what deploy/ installs.
    @Test func theShippedConfigurationIsTheFleets() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path
        let authority = try FleetAuthority.create(directory: try SystemCall.makeTemporaryDirectory(prefix: "cleave-fleet-"), hosts: [])
        func lines(_ text: String) -> [String] {
            text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        let shipped = lines(String(decoding: try SystemCall.readFile("\(repository)/deploy/mosquitto/cleave.conf"), as: UTF8.self))
        let fleet = lines(authority.accessSettings + "\n" + authority.listenerSettings).map {
            $0.replacingOccurrences(of: authority.directory, with: "/etc/cleave/fleet")
        }
        for line in fleet { #expect(shipped.contains(line), "deploy/mosquitto/cleave.conf has '\(line)'") }
        #expect(shipped.contains("listener 8883") && !shipped.contains { $0.hasPrefix("listener 1883") }, "TLS only")
        let shippedACL = lines(String(decoding: try SystemCall.readFile("\(repository)/deploy/mosquitto/acl"), as: UTF8.self)).filter {
            $0.hasPrefix("pattern")
        }
        let fleetACL = lines(authority.acl(coordinators: [])).filter { $0.hasPrefix("pattern") }
        #expect(shippedACL == fleetACL)
    }

    @Test func membersNeedValidNamesAndEnrollOnce() throws {
        var authority = try FleetAuthority.create(
            directory: try SystemCall.makeTemporaryDirectory(prefix: "cleave-fleet-"), hosts: ["coordinator.local"])
        try authority.enroll("pi-1")
        #expect(throws: FleetError.self) { try authority.enroll("pi-1") }
        for bad in ["", "a/b", "a b", "../x", String(repeating: "x", count: 65), "+"] {
            #expect(throws: FleetError.self, "\(bad)") { try authority.enroll(bad) }
        }
        #expect(throws: FleetError.self) { _ = try FleetAuthority.create(directory: authority.directory, hosts: []) }
        let reread = try FleetAuthority(directory: authority.directory)
        #expect(reread.registry == authority.registry)
        #expect(reread.registry.hosts.contains("coordinator.local"))
    }
}
