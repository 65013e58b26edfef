import CleaveSupport
import Foundation

/// A small HTTP/1.1 control interface for running proxies (loopback by default).
///
/// - `GET /metrics`: every proxy's counters (Prometheus text).
/// - `GET /proxies`: one line per proxy with its addresses and conditions.
/// - `POST /proxies/NAME/conditions?rate=1mbit&latency=50ms&jitter=10ms&loss=1%&direction=uplink`:
///   changes the named fields (of both directions unless `direction` says one).
/// - `POST /proxies/NAME/down?outage=hold|refuse`, `POST /proxies/NAME/up`, `POST /proxies/NAME/reset`.
///
/// Answers 200 with the new state, 404 for an unknown proxy or path, 400 naming a bad value.
public final class ControlServer: Sendable {
    public let endpoint: Endpoint
    private let listener: TCPSocket
    private let proxies: [String: NetemProxy]

    public init(endpoint: Endpoint, proxies: [NetemProxy]) throws {
        listener = try TCPSocket.listen(on: endpoint)
        self.endpoint = Endpoint(host: endpoint.host, port: listener.localPort)
        self.proxies = Dictionary(proxies.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        Thread.detachNewThread { [self] in
            while let connection = listener.accept() { serve(connection) }
        }
    }

    public func stop() { listener.close() }

    private func serve(_ connection: TCPSocket) {
        defer { connection.close() }
        var request: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        while !request.suffix(4).elementsEqual([13, 10, 13, 10]) && request.count < 16_384 {
            let count = connection.receive(into: buffer)
            guard count > 0 else { return }
            request += buffer[0..<count]
        }
        let line = String(decoding: request.prefix { $0 != 13 }, as: UTF8.self).split(separator: " ")
        let (status, body) = line.count >= 2 ? respond(method: String(line[0]), target: String(line[1])) : (400, "bad request\n")
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"][status] ?? "Error"
        let response =
            "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        _ = Array(response.utf8).withUnsafeBytes { connection.sendAll($0) }
    }

    /// The status and body for one request.
    func respond(method: String, target: String) -> (Int, String) {
        let components = URLComponents(string: target)
        let path = (components?.path ?? target).split(separator: "/").map(String.init)
        var query: [String: String] = [:]
        for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        switch (method, path.first, path.count) {
        case ("GET", "metrics", 1):
            return (200, proxies.keys.sorted().map { proxies[$0]!.metrics.text(proxy: $0) }.joined())
        case ("GET", "proxies", 1):
            return (200, proxies.keys.sorted().map(summary).joined())
        case ("POST", "proxies", 3):
            guard let proxy = proxies[path[1]] else { return (404, "no proxy '\(path[1])'; proxies: \(proxies.keys.sorted())\n") }
            do {
                try apply(path[2], query: query, to: proxy)
                return (200, summary(proxy.name))
            } catch let error as NetemError {
                return (400, error.description + "\n")
            } catch {
                return (400, "\(error)\n")
            }
        case (_, "metrics", _), (_, "proxies", _):
            return (405, "use GET /metrics, GET /proxies or POST /proxies/NAME/(conditions|down|up|reset)\n")
        default:
            return (404, "unknown path \(target)\n")
        }
    }

    private func summary(_ name: String) -> String {
        let proxy = proxies[name]!
        let (uplink, downlink) = proxy.conditions
        return "\(name) \(proxy.listen) -> \(proxy.upstream): \(ScenarioPlayer.describe(uplink: uplink, downlink: downlink))\n"
    }

    private func apply(_ action: String, query: [String: String], to proxy: NetemProxy) throws {
        var (uplink, downlink) = proxy.conditions
        switch action {
        case "reset":
            proxy.resetConnections()
            return
        case "up":
            (uplink.up, downlink.up) = (true, true)
        case "down":
            let outage = try LinkConditions.Outage(rawValue: query["outage"] ?? "hold").orThrow(NetemError("outage must be hold or refuse"))
            (uplink.up, downlink.up) = (false, false)
            (uplink.outage, downlink.outage) = (outage, outage)
        case "conditions":
            let direction = query["direction"] ?? "both"
            guard ["both", "uplink", "downlink"].contains(direction) else {
                throw NetemError("direction must be both, uplink or downlink, not '\(direction)'")
            }
            for (field, value) in query where field != "direction" {
                func change(_ c: inout LinkConditions) throws {
                    switch field {
                    case "rate": c.rate = value == "unlimited" ? nil : try LinkConditions.parseRate(value)
                    case "latency": c.latency = try LinkConditions.parseDuration(value)
                    case "jitter": c.jitter = try LinkConditions.parseDuration(value)
                    case "loss":
                        let p = try LinkConditions.parseProbability(value)
                        c.loss = p == 0 ? .none : .random(p)
                    case "burst": c.burstBytes = try Int(value).orThrow(NetemError("burst must be a number of bytes"))
                    default: throw NetemError("unknown field '\(field)'; known: rate, latency, jitter, loss, burst, direction")
                    }
                }
                if direction != "downlink" { try change(&uplink) }
                if direction != "uplink" { try change(&downlink) }
            }
        default:
            throw NetemError("unknown action '\(action)'; use conditions, down, up or reset")
        }
        try proxy.setConditions(uplink: uplink, downlink: downlink)
    }
}

extension Optional {
    func orThrow(_ error: @autoclosure () -> some Error) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}
