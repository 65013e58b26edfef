import CleaveSupport
import Dispatch
import Foundation
import Synchronization

/// A TCP proxy that makes a good link look like a bad one.
///
/// Place it between a client (an agent) and a server (the broker): every accepted
/// connection is joined to a new connection to `upstream`, and each direction is
/// shaped by its ``LinkConditions`` — `uplink` for client → server, `downlink` for
/// server → client — which can be changed while connections are open. Each direction
/// reads into packets of `packetBytes`, timestamps them, and a second thread hands
/// them on at the time its ``LinkShaper`` decides. A bounded queue per direction gives
/// the sender TCP back-pressure at the emulated rate rather than at loopback speed.
public final class NetemProxy: Sendable {
    public let name: String
    public let upstream: Endpoint
    /// Where clients connect (the real port when 0 was asked for).
    public let listen: Endpoint
    public let metrics = ProxyMetrics()
    private let listener: TCPSocket
    private let seed: UInt64
    private let state: Mutex<State>

    private struct State {
        var uplink: LinkConditions
        var downlink: LinkConditions
        var uplinkTrace: DeliveryTrace?
        var downlinkTrace: DeliveryTrace?
        var connections: [Int: Connection] = [:]
        var nextConnection = 0
        var stopped = false
        /// When the link last came up (monotonic seconds): held bytes start from here.
        var upSince = 0.0
    }

    /// Binds `listen` (port 0: a free port) and starts accepting.
    public init(
        name: String = "proxy", listen: Endpoint, upstream: Endpoint, uplink: LinkConditions = LinkConditions(),
        downlink: LinkConditions = LinkConditions(), seed: UInt64 = 1
    ) throws {
        try uplink.validate()
        try downlink.validate()
        self.name = name
        self.upstream = upstream
        self.seed = seed
        listener = try TCPSocket.listen(on: listen)
        self.listen = Endpoint(host: listen.host, port: listener.localPort)
        state = Mutex(State(uplink: uplink, downlink: downlink))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { stop() }

    /// The conditions in force.
    public var conditions: (uplink: LinkConditions, downlink: LinkConditions) {
        state.withLock { ($0.uplink, $0.downlink) }
    }

    /// Changes the conditions of both directions; packets not yet handed on follow the new ones.
    public func setConditions(
        uplink: LinkConditions, downlink: LinkConditions, uplinkTrace: DeliveryTrace? = nil, downlinkTrace: DeliveryTrace? = nil
    )
        throws
    {
        try uplink.validate()
        try downlink.validate()
        let toReset: [Connection] = state.withLock { state in
            let wasDown = !state.uplink.up || !state.downlink.up
            state.uplink = uplink
            state.downlink = downlink
            state.uplinkTrace = uplinkTrace
            state.downlinkTrace = downlinkTrace
            if wasDown && uplink.up && downlink.up { state.upSince = monotonicSeconds() }
            let refusing = (!uplink.up && uplink.outage == .refuse) || (!downlink.up && downlink.outage == .refuse)
            return refusing ? Array(state.connections.values) : []
        }
        metrics.resets.add(toReset.count, ordering: .relaxed)
        for connection in toReset { connection.reset() }
    }

    /// Resets every open connection (both ends see a TCP reset).
    public func resetConnections() {
        let open = state.withLock { Array($0.connections.values) }
        metrics.resets.add(open.count, ordering: .relaxed)
        for connection in open { connection.reset() }
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        let open: [Connection] = state.withLock { state in
            state.stopped = true
            return Array(state.connections.values)
        }
        listener.close()
        for connection in open { connection.close() }
    }

    // MARK: - Connections

    private func acceptLoop() {
        while let client = listener.accept() {
            let (refused, index) = state.withLock { state -> (Bool, Int) in
                let down = (!state.uplink.up && state.uplink.outage == .refuse) || (!state.downlink.up && state.downlink.outage == .refuse)
                defer { state.nextConnection += 1 }
                return (down || state.stopped, state.nextConnection)
            }
            if refused {
                metrics.refused.add(1, ordering: .relaxed)
                client.reset()
                continue
            }
            guard let server = try? TCPSocket.connect(to: upstream) else {
                metrics.refused.add(1, ordering: .relaxed)
                client.reset()
                continue
            }
            let connection = Connection(client: client, server: server)
            state.withLock { $0.connections[index] = connection }
            metrics.accepted.add(1, ordering: .relaxed)
            let seed = self.seed &+ UInt64(index) &* 2
            let up = Pipe(from: client, to: server, direction: .uplink, proxy: self, seed: seed)
            let down = Pipe(from: server, to: client, direction: .downlink, proxy: self, seed: seed &+ 1)
            let finished = Atomic<Int>(0)
            for pipe in [up, down] {
                pipe.start { [self] in
                    if finished.add(1, ordering: .relaxed).newValue == 2 {
                        connection.close()
                        _ = state.withLock { $0.connections.removeValue(forKey: index) }
                    }
                }
            }
        }
    }

    /// The conditions and trace of one direction, and when the link came up.
    fileprivate func current(_ direction: Direction) -> (LinkConditions, DeliveryTrace?, upSince: Double) {
        state.withLock { state in
            direction == .uplink ? (state.uplink, state.uplinkTrace, state.upSince) : (state.downlink, state.downlinkTrace, state.upSince)
        }
    }
}

enum Direction { case uplink, downlink }

/// Both sockets of one proxied connection.
private final class Connection: Sendable {
    let client: TCPSocket
    let server: TCPSocket

    init(client: TCPSocket, server: TCPSocket) {
        self.client = client
        self.server = server
    }

    func reset() {
        client.reset()
        server.reset()
    }

    func close() {
        client.close()
        server.close()
    }
}

/// One direction of a connection: a reader thread that packetizes and a writer thread that
/// delivers each packet at its time.
private final class Pipe: Sendable {
    private let source: TCPSocket
    private let destination: TCPSocket
    private let direction: Direction
    private unowned let proxy: NetemProxy
    private let seed: UInt64
    private let queue = PacketQueue(capacityBytes: 256 * 1024)

    init(from source: TCPSocket, to destination: TCPSocket, direction: Direction, proxy: NetemProxy, seed: UInt64) {
        self.source = source
        self.destination = destination
        self.direction = direction
        self.proxy = proxy
        self.seed = seed
    }

    func start(onFinish: @escaping @Sendable () -> Void) {
        Thread.detachNewThread { [self] in read() }
        Thread.detachNewThread { [self] in
            write()
            onFinish()
        }
    }

    private func read() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let packetBytes = proxy.current(direction).0.packetBytes
            let count = source.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<packetBytes]))
            guard count > 0 else { break }
            queue.push(Packet(bytes: Array(buffer[0..<count]), arrival: monotonicSeconds()))
        }
        queue.push(nil)
    }

    private func write() {
        let metrics = proxy.metrics
        var shaper = LinkShaper(seed: seed)
        while let packet = queue.pop() {
            var (conditions, trace, upSince) = proxy.current(direction)
            while !conditions.up {
                if conditions.outage == .refuse { return }
                sleep(until: monotonicSeconds() + 0.001)
                (conditions, trace, upSince) = proxy.current(direction)
            }
            let decision = shaper.schedule(
                bytes: packet.bytes.count, arrival: max(packet.arrival, upSince), conditions: conditions, trace: trace)
            let wait = decision.release - monotonicSeconds()
            if wait > 0 { sleep(until: decision.release) }
            let delivered = packet.bytes.withUnsafeBytes { destination.sendAll($0) }
            guard delivered else { break }
            let counters = direction == .uplink ? metrics.uplink : metrics.downlink
            counters.bytes.add(packet.bytes.count, ordering: .relaxed)
            counters.packets.add(1, ordering: .relaxed)
            counters.delayMicroseconds.add(Int((decision.release - packet.arrival) * 1e6), ordering: .relaxed)
            if decision.lost { counters.lost.add(1, ordering: .relaxed) }
        }
        destination.shutdownWrite()
    }
}

struct Packet {
    let bytes: [UInt8]
    let arrival: Double
}

/// A bounded FIFO of packets between a reader and a writer thread (nil marks the end).
private final class PacketQueue: Sendable {
    private let items = Mutex<[Packet?]>([])
    private let available = DispatchSemaphore(value: 0)
    private let space: DispatchSemaphore

    /// The space semaphore starts at 0 and is raised to its capacity: libdispatch traps when a
    /// semaphore is freed below its initial value, which a pipe cut off mid-stream would do.
    init(capacityBytes: Int) {
        space = DispatchSemaphore(value: 0)
        for _ in 0..<max(8, capacityBytes / 1448) { space.signal() }
    }

    func push(_ packet: Packet?) {
        if packet != nil { space.wait() }
        items.withLock { $0.append(packet) }
        available.signal()
    }

    func pop() -> Packet? {
        available.wait()
        let packet = items.withLock { $0.removeFirst() }
        if packet != nil { space.signal() }
        return packet
    }
}
