import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Text that is not a usable `HOST:PORT` address, with the reason.
public struct AddressError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// An IPv4 TCP endpoint, `HOST:PORT` (a dotted address or `localhost`).
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; a bare port means 127.0.0.1; port 0 (for listening) means any free port.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let port = UInt16(parts.last ?? "") else {
            throw AddressError("'\(text)' is not HOST:PORT with a port from 0 to 65535")
        }
        host = parts.count == 2 ? String(parts[0]) : "127.0.0.1"
        self.port = port
    }

    public var description: String { "\(host):\(port)" }

    package func address() throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        let name = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, name, &address.sin_addr) == 1 else {
            throw AddressError("'\(host)' is not an IPv4 address")
        }
        return address
    }
}

/// A connected or listening TCP socket.
///
/// Every call retries `EINTR` and turns failures into ``SystemError`` in one place. The
/// descriptor is released only in `deinit`, when no thread can still use it: ``close()``
/// shuts the connection down (waking blocked calls) and ``reset()`` swaps the socket for a
/// placeholder, so a number that another socket reuses is never touched by a late call.
public final class TCPSocket: Sendable {
    package let descriptor: Int32
    private let closed = Mutex(false)

    private init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { _ = Glibc.close(descriptor) }

    /// A listening socket on `endpoint` (port 0: any free port).
    public static func listen(on endpoint: Endpoint, backlog: Int32 = 64) throws -> TCPSocket {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw SystemCall.lastError("socket") }
        let socket = TCPSocket(descriptor: descriptor)
        var yes: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = try endpoint.address()
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw SystemCall.lastError("bind to \(endpoint)") }
        guard Glibc.listen(descriptor, backlog) == 0 else { throw SystemCall.lastError("listen on \(endpoint)") }
        return socket
    }

    /// A connection to `endpoint`.
    public static func connect(to endpoint: Endpoint) throws -> TCPSocket {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw SystemCall.lastError("socket") }
        let socket = TCPSocket(descriptor: descriptor)
        var address = try endpoint.address()
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                SystemCall.retryingInterrupts { Glibc.connect(descriptor, raw, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0 else { throw SystemCall.lastError("connect to \(endpoint)") }
        socket.setNoDelay()
        return socket
    }

    /// The port this socket is bound to.
    public var localPort: UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return UInt16(bigEndian: address.sin_port)
    }

    /// The next incoming connection, or nil once the socket is closed.
    public func accept() -> TCPSocket? {
        let client = SystemCall.retryingInterrupts { Glibc.accept(descriptor, nil, nil) }
        guard client >= 0 else { return nil }
        let socket = TCPSocket(descriptor: client)
        socket.setNoDelay()
        return socket
    }

    /// Reads up to `count` bytes; an empty array at the end of the stream or on an error.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        max(0, SystemCall.retryingInterrupts { recv(descriptor, buffer.baseAddress, buffer.count, 0) })
    }

    /// Fills all of `buffer`; false at the end of the stream, on an error or a timeout.
    public func receiveAll(into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        var offset = 0
        while offset < buffer.count {
            let received = SystemCall.retryingInterrupts { recv(descriptor, buffer.baseAddress! + offset, buffer.count - offset, 0) }
            guard received > 0 else { return false }
            offset += received
        }
        return true
    }

    /// Makes a blocked receive give up after `seconds` (0: wait for ever), so that a peer that
    /// stops answering without closing (a dropped link) is noticed.
    public func setReceiveTimeout(seconds: Double) {
        var value = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes all of `bytes`; false if the peer is gone.
    public func sendAll(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = SystemCall.retryingInterrupts { send(descriptor, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { return false }
            offset += sent
        }
        return true
    }

    /// Ends the writing half (the peer reads end of stream).
    public func shutdownWrite() { _ = Glibc.shutdown(descriptor, Int32(SHUT_WR)) }

    /// Ends the connection with a TCP reset instead of an orderly close (what a broken link
    /// looks like): no lingering, reads woken, and the socket replaced by an unconnected
    /// placeholder so that its last reference goes and the kernel sends the reset.
    public func reset() {
        guard markClosed() else { return }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        _ = Glibc.shutdown(descriptor, Int32(SHUT_RD))
        let placeholder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if placeholder >= 0 {
            _ = dup2(placeholder, descriptor)
            _ = Glibc.close(placeholder)
        }
    }

    /// Shuts the connection down once; blocked `accept`/`recv` calls on it return.
    public func close() {
        guard markClosed() else { return }
        _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Whether this call is the one that closes.
    private func markClosed() -> Bool {
        closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
    }

    private func setNoDelay() {
        var yes: Int32 = 1
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
    }
}
