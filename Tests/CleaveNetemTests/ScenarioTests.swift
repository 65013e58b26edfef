import CleaveSupport
import Foundation
import Testing

@testable import CleaveNetem

@Suite struct ScenarioTests {
    static let scenarios = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scenarios")

    @Test(arguments: ["wifi-congestion", "commute", "rural-nbiot", "broker-outage", "mixed-fleet"])
    func shippedScenariosLoad(name: String) throws {
        let scenario = try Scenario.load(Self.scenarios.appendingPathComponent("\(name).yaml").path)
        #expect(scenario.name == name)
        #expect(scenario.duration >= 60_000)
        let steps = scenario.timeline(for: "any-agent")
        #expect(!steps.isEmpty && steps[0].at == 0)
        #expect(zip(steps, steps.dropFirst()).allSatisfy { $0.at < $1.at })
    }

    @Test func stepsChangeOnlyWhatTheyName() throws {
        let scenario = try Scenario.load(Self.scenarios.appendingPathComponent("commute.yaml").path)
        let tunnel = try #require(scenario.step(for: "a1", at: 90_000))
        #expect(!tunnel.uplink.up && tunnel.uplink.outage == .hold)
        #expect(tunnel.uplink.rate == 384_000, "the rate set before the outage stays")
        let after = try #require(scenario.step(for: "a1", at: 120_000))
        #expect(after.uplink.up && after.downlink.rate == 12_000_000 && after.uplink.loss == .none)
        let mixed = try Scenario.load(Self.scenarios.appendingPathComponent("mixed-fleet.yaml").path)
        #expect(mixed.timeline(for: "a3").first?.uplink.rate == 250_000)
        #expect(mixed.timeline(for: "a7").first?.uplink.rate == 40_000_000)
    }

    static func error(_ yaml: String) -> String {
        do {
            _ = try Scenario.parse(yaml, source: "bad.yaml")
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func badScenariosNameTheLineAndField() {
        let head = "name: x\nduration: 10s\nlinks:\n  default:\n"
        #expect(Self.error(head + "    - at: 0s\n      rate: fast\n").hasPrefix("bad.yaml: line 6: field 'rate': 'fast' is not a rate"))
        #expect(Self.error(head + "    - at: 0s\n      latancy: 5ms\n").hasPrefix("bad.yaml: line 6: field 'latancy': unknown in links.default"))
        #expect(
            Self.error(head + "    - at: 5s\n    - at: 2s\n")
                == "bad.yaml: line 6: field 'at': 2000.0 ms does not come after the previous step's 5000.0 ms")
        #expect(Self.error(head + "    - at: 0s\n      down: maybe\n") == "bad.yaml: line 6: field 'down': must be 'hold' or 'refuse'")
        #expect(Self.error(head + "    - at: 0s\n      loss: 150%\n").hasPrefix("bad.yaml: line 6: field 'loss'"))
        #expect(Self.error("name: x\nlinks:\n  default:\n    - at: 0s\n") == "bad.yaml: missing field 'duration'")
        #expect(Self.error("- 1\n- 2\n") == "bad.yaml: line 1: expected a mapping with 'name' and 'links'")
        #expect(Self.error(head + "    - at: 0s\n      burst_loss: {enter_bad: 1%}\n").contains("missing 'leave_bad'"))
    }

    @Test func aBadTraceNamesItsFileAndLine() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netem-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "1\n2\nthree\n".write(to: directory.appendingPathComponent("bad.trace"), atomically: true, encoding: .utf8)
        let yaml = "name: x\nduration: 10s\nlinks:\n  default:\n    - at: 0s\n      trace: bad.trace\n"
        try yaml.write(to: directory.appendingPathComponent("s.yaml"), atomically: true, encoding: .utf8)
        let error = try #require(throws: NetemError.self) { try Scenario.load(directory.appendingPathComponent("s.yaml").path) }
        #expect(error.description.hasSuffix("bad.trace line 3: 'three' is not a whole number of milliseconds"))
    }
}

@Suite struct ControlServerTests {
    @Test func controlChangesConditionsAndExportsCounters() throws {
        let echo = try TestServer(echo: true)
        let proxy = try NetemProxy(name: "a1", listen: Endpoint(host: "127.0.0.1", port: 0), upstream: echo.endpoint)
        defer { proxy.stop() }
        let server = try ControlServer(endpoint: Endpoint(host: "127.0.0.1", port: 0), proxies: [proxy])
        defer { server.stop() }

        let (status, body) = server.respond(method: "POST", target: "/proxies/a1/conditions?rate=2mbit&latency=40ms&direction=uplink")
        #expect(status == 200, "\(body)")
        #expect(proxy.conditions.uplink.rate == 2e6 && proxy.conditions.uplink.latency == 40)
        #expect(proxy.conditions.downlink.rate == nil)
        #expect(server.respond(method: "POST", target: "/proxies/a1/conditions?rate=fast").0 == 400)
        #expect(server.respond(method: "POST", target: "/proxies/zz/up").0 == 404)
        #expect(server.respond(method: "POST", target: "/proxies/a1/down?outage=refuse").0 == 200)
        #expect(!proxy.conditions.uplink.up && proxy.conditions.uplink.outage == .refuse)
        #expect(server.respond(method: "POST", target: "/proxies/a1/up").0 == 200)

        // Over HTTP, as curl would.
        let client = try TCPSocket.connect(to: server.endpoint)
        #expect(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8).withUnsafeBytes { client.sendAll($0) })
        var response: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let count = client.receive(into: buffer)
            guard count > 0 else { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        #expect(text.contains("cleave_netem_connections_accepted_total{proxy=\"a1\"} 0"))
    }
}
