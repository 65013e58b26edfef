import CleaveSupport

/// The coordinator's connection to one shard worker: opens the session (sending the slice
/// file when the worker lacks it), then sends a block's input and reads back the partial.
final class RemoteShard {
    let endpoint: Endpoint
    let slice: ShardSlice
    private let socket: TCPSocket
    /// Bytes of the data plane written to and read from the socket (headers included; the
    /// session's opening and the slice transfer are not counted).
    private(set) var bytesSent = 0
    private(set) var bytesReceived = 0
    /// Bytes of the slice file sent when the worker did not have it.
    private(set) var sliceBytesSent = 0
    private var scratch: [UInt8] = []

    /// Connects to `endpoint` and opens a session for `slice`.
    ///
    /// - Parameters:
    ///   - sliceFile: the slice's bytes and their SHA-256, made only if the worker asks.
    ///   - timeout: seconds a reply may take before the worker counts as lost.
    /// - Throws: ``LLMError`` `worker` when the worker is unreachable or refuses (another
    ///   model, a corrupt slice), with its reason.
    init(
        endpoint: Endpoint, slice: ShardSlice, modelSHA256: String, sliceSHA256: String, sliceBytes: Int, capacity: Int,
        precision: ActivationPrecision, timeout: Double, sliceFile: () throws -> [UInt8]
    ) throws {
        self.endpoint = endpoint
        self.slice = slice
        do {
            socket = try TCPSocket.connect(to: endpoint)
        } catch {
            throw LLMError(.worker, "cannot reach worker \(endpoint): \(error)")
        }
        socket.setReceiveTimeout(seconds: timeout)
        let hello = ShardWire.Hello(
            modelSHA256: modelSHA256, sliceSHA256: sliceSHA256, sliceBytes: sliceBytes, slice: slice, capacity: capacity, precision: precision)
        try send(ShardWire.Request(operation: .hello, payload: hello.encoded()))
        var reply = try receive()
        if reply.status == .needSlice {
            let bytes = try sliceFile()
            // The worker may take a while to hash and store a large slice.
            socket.setReceiveTimeout(seconds: max(timeout, 120))
            // 1 MiB pieces: what a board holds of the transfer at any time.
            for start in stride(from: 0, to: bytes.count, by: 1 << 20) {
                try send(ShardWire.Request(operation: .slice, payload: Array(bytes[start..<min(start + (1 << 20), bytes.count)])))
            }
            reply = try receive()
            socket.setReceiveTimeout(seconds: timeout)
            sliceBytesSent = bytes.count
        }
        guard reply.status == .ok else { throw LLMError(.worker, "worker \(endpoint) refused the slice: \(reply.text)") }
        (bytesSent, bytesReceived) = (0, 0)
    }

    deinit {
        _ = ShardWire.send(ShardWire.Request(operation: .bye), on: socket)
        socket.close()
    }

    /// Sends block `layer`'s `operation` for `tokens` rows of `input` at positions `first…`.
    func start(
        _ operation: ShardWire.Operation, layer: Int, first: Int, input: UnsafePointer<Float>, tokens: Int, width: Int, encoding: SyncEncoding
    ) throws {
        scratch.removeAll(keepingCapacity: true)
        encoding.encode(input, count: tokens * width, into: &scratch)
        try send(ShardWire.Request(operation: operation, encoding: encoding, layer: layer, first: first, tokens: tokens, payload: scratch))
    }

    /// Reads the partial output of the request started last into `out` (`count` values).
    func finish(into out: UnsafeMutablePointer<Float>, count: Int, encoding: SyncEncoding) throws {
        let reply = try receive()
        guard reply.status == .ok else { throw LLMError(.worker, "worker \(endpoint) failed: \(reply.text)") }
        guard reply.encoding == encoding, reply.payload.count == encoding.byteCount(values: count) else {
            throw LLMError(
                .worker, "worker \(endpoint) answered \(reply.payload.count) bytes of \(reply.encoding), expected \(count) values of \(encoding)")
        }
        reply.payload.withUnsafeBytes { encoding.decode($0, count: count, into: out) }
    }

    private func send(_ request: ShardWire.Request) throws {
        guard ShardWire.send(request, on: socket) else { throw LLMError(.worker, "worker \(endpoint) is gone (send failed)") }
        bytesSent += ShardWire.requestHeaderBytes + request.payload.count
    }

    private func receive() throws -> ShardWire.Reply {
        let reply = try ShardWire.receiveReply(on: socket, from: endpoint.description)
        bytesReceived += ShardWire.replyHeaderBytes + reply.payload.count
        return reply
    }
}
