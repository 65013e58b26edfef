import CleaveSupport
import Foundation
import Synchronization
import Testing

@testable import CleaveNetem

/// A server on a free loopback port that echoes or swallows what it receives.
final class TestServer: Sendable {
    let socket: TCPSocket
    let endpoint: Endpoint
    /// (bytes so far, monotonic seconds) at each receive, for `sink` servers.
    let receipts = Mutex<[(Int, Double)]>([])

    init(echo: Bool) throws {
        socket = try TCPSocket.listen(on: Endpoint(host: "127.0.0.1", port: 0))
        endpoint = Endpoint(host: "127.0.0.1", port: socket.localPort)
        Thread.detachNewThread { [self] in
            while let connection = socket.accept() {
                Thread.detachNewThread { [self] in serve(connection, echo: echo) }
            }
        }
    }

    private func serve(_ connection: TCPSocket, echo: Bool) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 8)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            let count = connection.receive(into: buffer)
            guard count > 0 else { break }
            total += count
            let now = monotonicSeconds()
            receipts.withLock { $0.append((total, now)) }
            if echo { _ = connection.sendAll(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) }
        }
        connection.close()
    }

    deinit { socket.close() }
}

@Suite(.serialized) struct ProxyAccuracyTests {
    /// Sends ~2 s worth of bytes at `rate` and measures the rate at which they arrive.
    @Test(arguments: [64e3, 1e6, 10e6, 50e6])
    func throughputIsTheConfiguredRate(rate: Double) throws {
        let sink = try TestServer(echo: false)
        let proxy = try NetemProxy(
            listen: Endpoint(host: "127.0.0.1", port: 0), upstream: sink.endpoint, uplink: LinkConditions(rate: rate))
        defer { proxy.stop() }
        let client = try TCPSocket.connect(to: proxy.listen)
        let total = Int(rate / 8 * 2)
        let chunk = [UInt8](repeating: 7, count: 16_384)
        var sent = 0
        while sent < total {
            let count = min(chunk.count, total - sent)
            #expect(chunk.withUnsafeBytes { client.sendAll(UnsafeRawBufferPointer(rebasing: $0[0..<count])) })
            sent += count
        }
        let deadline = monotonicSeconds() + 10
        while (sink.receipts.withLock { $0.last?.0 ?? 0 }) < total && monotonicSeconds() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        let receipts = sink.receipts.withLock { $0 }
        let first = try #require(receipts.first)
        let last = try #require(receipts.last)
        #expect(last.0 == total, "all \(total) bytes arrive")
        let measured = Double(last.0 - first.0) * 8 / (last.1 - first.1)
        #expect(abs(measured / rate - 1) <= 0.10, "measured \(measured) bit/s for a configured \(rate)")
        client.close()
    }

    /// Ping-pong of one byte through 20 ms each way: the round trip's median is 40 ms ± 2.
    @Test(arguments: [(20.0, 0.0), (20.0, 4.0), (5.0, 0.0)])
    func addedLatencyIsTheConfiguredDelay(latency: Double, jitter: Double) throws {
        let echo = try TestServer(echo: true)
        let link = LinkConditions(latency: latency, jitter: jitter)
        let proxy = try NetemProxy(listen: Endpoint(host: "127.0.0.1", port: 0), upstream: echo.endpoint, uplink: link, downlink: link)
        defer { proxy.stop() }
        let client = try TCPSocket.connect(to: proxy.listen)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
        defer { buffer.deallocate() }
        var rounds: [Double] = []
        for _ in 0..<30 {
            let start = monotonicSeconds()
            #expect([UInt8(1)].withUnsafeBytes { client.sendAll($0) })
            #expect(client.receive(into: buffer) == 1)
            rounds.append((monotonicSeconds() - start) * 1000)
        }
        let median = rounds.sorted()[rounds.count / 2]
        // Two directions, each latency plus on average half the jitter.
        let expected = 2 * (latency + jitter / 2)
        #expect(abs(median - expected) <= 2, "median round trip \(median) ms, configured \(expected) ms")
        #expect(rounds.min()! >= 2 * latency - 0.5, "no packet beats the configured latency")
        client.close()
    }

    @Test func heldOutageDelaysButLosesNothing() throws {
        let echo = try TestServer(echo: true)
        let proxy = try NetemProxy(listen: Endpoint(host: "127.0.0.1", port: 0), upstream: echo.endpoint)
        defer { proxy.stop() }
        let client = try TCPSocket.connect(to: proxy.listen)
        var down = LinkConditions()
        down.up = false
        try proxy.setConditions(uplink: down, downlink: down)
        let start = monotonicSeconds()
        #expect(Array("hello".utf8).withUnsafeBytes { client.sendAll($0) })
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.5)
            try? proxy.setConditions(uplink: LinkConditions(), downlink: LinkConditions())
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
        defer { buffer.deallocate() }
        var received = 0
        while received < 5 {
            let count = client.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[received...]))
            guard count > 0 else { break }
            received += count
        }
        #expect(received == 5, "errno \(errno) \(proxy.metrics.text(proxy: "p"))")
        #expect(String(decoding: buffer[0..<5], as: UTF8.self) == "hello")
        #expect(monotonicSeconds() - start >= 0.45, "bytes were held while the link was down")
        client.close()
    }

    @Test func refusedOutageResetsAndTurnsAway() throws {
        let echo = try TestServer(echo: true)
        let proxy = try NetemProxy(listen: Endpoint(host: "127.0.0.1", port: 0), upstream: echo.endpoint)
        defer { proxy.stop() }
        let client = try TCPSocket.connect(to: proxy.listen)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
        defer { buffer.deallocate() }
        #expect([UInt8(9)].withUnsafeBytes { client.sendAll($0) })
        #expect(client.receive(into: buffer) == 1)
        var down = LinkConditions()
        down.up = false
        down.outage = .refuse
        try proxy.setConditions(uplink: down, downlink: down)
        #expect(client.receive(into: buffer) == 0, "the open connection is reset")
        let late = try TCPSocket.connect(to: proxy.listen)
        #expect(late.receive(into: buffer) == 0, "a new connection is turned away")
        #expect(proxy.metrics.resets.load(ordering: .relaxed) >= 1)
        #expect(proxy.metrics.refused.load(ordering: .relaxed) >= 1)
        #expect(proxy.metrics.text(proxy: "p").contains("cleave_netem_connections_refused_total{proxy=\"p\"} 1"))
    }
}

@Suite struct LinkShaperTests {
    @Test func theSameSeedAndArrivalsGiveTheSameSchedule() {
        var conditions = LinkConditions(rate: 1e6, latency: 30, jitter: 10, loss: .random(0.05))
        conditions.retransmitDelay = 200
        var a = LinkShaper(seed: 42)
        var b = LinkShaper(seed: 42)
        var c = LinkShaper(seed: 43)
        var same = true
        var differs = false
        for i in 0..<2000 {
            let arrival = Double(i) * 0.001
            let x = a.schedule(bytes: 1448, arrival: arrival, conditions: conditions, trace: nil)
            let y = b.schedule(bytes: 1448, arrival: arrival, conditions: conditions, trace: nil)
            let z = c.schedule(bytes: 1448, arrival: arrival, conditions: conditions, trace: nil)
            same = same && x.release == y.release && x.lost == y.lost
            differs = differs || x.release != z.release
        }
        #expect(same)
        #expect(differs)
    }

    @Test func gilbertElliottLosesInBurstsAtItsMeanRate() {
        let loss = LinkConditions.Loss.gilbertElliott(enterBad: 0.01, leaveBad: 0.2, lossGood: 0.001, lossBad: 0.5)
        var shaper = LinkShaper(seed: 7)
        var lost = 0
        var runs = 0
        var previous = false
        let conditions = LinkConditions(loss: loss)
        for i in 0..<200_000 {
            let decision = shaper.schedule(bytes: 100, arrival: Double(i), conditions: conditions, trace: nil)
            if decision.lost {
                lost += 1
                if !previous { runs += 1 }
            }
            previous = decision.lost
        }
        let rate = Double(lost) / 200_000
        #expect(abs(rate - loss.meanRate) < 0.15 * loss.meanRate, "loss \(rate), expected \(loss.meanRate)")
        #expect(Double(lost) / Double(runs) > 1.3, "losses come in bursts (mean run \(Double(lost) / Double(runs)))")
    }

    @Test func traceOpportunitiesSetTheRate() throws {
        // One 1500-byte opportunity every millisecond: 12 Mbit/s.
        let trace = try DeliveryTrace(text: (1...100).map(String.init).joined(separator: "\n"))
        #expect(abs(trace.meanRate - 12e6) < 1)
        var shaper = LinkShaper(seed: 1)
        var last = 0.0
        for _ in 0..<3000 {
            last = shaper.schedule(bytes: 1500, arrival: 0, conditions: LinkConditions(), trace: trace).release
        }
        #expect(abs(last - 3.0) < 0.002, "3000 packets take 3000 opportunities: \(last) s")
    }

    @Test func badTracesAndValuesAreNamed() throws {
        #expect(throws: NetemError("trace line 3: 'x' is not a whole number of milliseconds")) {
            try DeliveryTrace(text: "1\n2\nx\n")
        }
        #expect(throws: NetemError("trace line 2: 1 ms comes before the previous line's 5 ms")) {
            try DeliveryTrace(text: "5\n1\n")
        }
        #expect(throws: NetemError.self) { try DeliveryTrace(text: "\n0\n") }
        #expect(try LinkConditions.parseRate("64kbit") == 64_000)
        #expect(try LinkConditions.parseRate("1.5mbit") == 1_500_000)
        #expect(try LinkConditions.parseDuration("1.5s") == 1500)
        #expect(try LinkConditions.parseProbability("2%") == 0.02)
        #expect(throws: NetemError.self) { try LinkConditions.parseRate("fast") }
        #expect(throws: NetemError("loss must be 0…100%, it is 150.0%")) { try LinkConditions(loss: .random(1.5)).validate() }
    }
}
