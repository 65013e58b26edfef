import CleaveProtocol
import Foundation
import Testing

@testable import CleaveMQTT

/// A Mosquitto TLS listener with a CA and server certificate made by openssl for the test.
@Suite struct TLSTests {
    func run(_ arguments: [String], in folder: URL) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = folder
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "openssl \(arguments.first ?? "")")
    }

    @Test func connectsOverTLSWithTheCA() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1\n".write(to: folder.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
        try run(
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=cleave-test-ca"],
            in: folder)
        try run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], in: folder)
        try run(
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "1",
                "-extfile", "san.ext",
            ], in: folder)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: folder.path)
        for file in ["ca.crt", "server.crt", "server.key"] {
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: folder.appendingPathComponent(file).path)
        }
        let broker = try LocalBroker(
            extraConfiguration: """
                cafile \(folder.appendingPathComponent("ca.crt").path)
                certfile \(folder.appendingPathComponent("server.crt").path)
                keyfile \(folder.appendingPathComponent("server.key").path)
                """)
        let secure = try MQTTClient(
            MQTTConfiguration(
                port: broker.port, clientID: "tls-client", tls: .init(caFile: folder.appendingPathComponent("ca.crt").path)))
        try secure.connect()
        var connected = false
        for await event in secure.events {
            if case .connected = event { connected = true }
            break
        }
        #expect(connected, "a client trusting the CA connects over TLS")
        try secure.subscribe("t/#")
        try secure.publish(MQTTMessage(topic: "t/echo", payload: [42], qos: 1))
        var echoed: [UInt8]?
        for await event in secure.events {
            if case .message(let message) = event {
                echoed = message.payload
                break
            }
        }
        #expect(echoed == [42])

        let plain = try MQTTClient(MQTTConfiguration(port: broker.port, clientID: "plain-client", reconnectDelay: (5, 5)))
        try plain.connect()
        for await event in plain.events {
            if case .connected = event { Issue.record("a plain-text client must not get through a TLS listener") }
            break
        }
    }
}
