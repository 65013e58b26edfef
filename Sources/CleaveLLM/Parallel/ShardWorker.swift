import CleaveSupport
import CleaveTensor
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The board's side of tensor parallelism: serves one coordinator at a time on a TCP
/// connection, computing its slice of every block for each request.
///
/// A session: `hello` names the model and slice; the slice file comes from the worker's
/// cache (`<cache>/<sha256>.gguf`) or is streamed by the coordinator, checked against its
/// SHA-256 and the model digest before it is stored and mapped. Then each request is one
/// block's attention or MLP over the tokens of a pass; the worker keeps its heads' KV cache
/// and truncates it when a pass starts before its end (a new prompt, or the coordinator
/// rebuilding the caches after another worker failed).
public final class ShardWorker: @unchecked Sendable {
    /// Where verified slice files are kept.
    public let cacheDirectory: String
    public let threads: Int?
    /// Bytes of slice weights to keep resident (nil: the whole slice): a ``WeightWindow``.
    public let memoryBudget: Int?
    /// Called with one line per event (session, slice, error).
    public let log: @Sendable (String) -> Void
    /// The listener and the connection being served, for ``stop()`` (from any thread).
    private let sockets = Mutex<(listener: TCPSocket?, connection: TCPSocket?)>((nil, nil))
    /// The slice loaded last, kept across sessions so that a reconnecting coordinator starts at
    /// once. Touched only by the serving thread.
    private var loaded: (sha256: String, precision: ActivationPrecision, capacity: Int, session: Session)?

    /// A loaded slice with its cache and buffers.
    final class Session {
        let file: GGUFFile
        let configuration: LlamaConfiguration
        let shard: LlamaShard
        let cache: KVCache
        let input: Activations
        let output: UnsafeMutablePointer<Float>
        let window: WeightWindow?

        init(file: GGUFFile, slice: ShardSlice, capacity: Int, threads: Int?, precision: ActivationPrecision, memoryBudget: Int?) throws {
            self.file = file
            configuration = try LlamaConfiguration(file)
            let batch = 64
            shard = try LlamaShard(
                file, configuration: configuration, slice: slice, cut: true, workers: WorkerTeam(threads: threads), batchSize: batch,
                precision: precision)
            cache = shard.makeCache(capacity: capacity)
            input = Activations(tokens: batch, columns: configuration.embedding)
            output = .allocate(capacity: batch * configuration.embedding)
            let layers = configuration.layers
            window = memoryBudget.map { WeightWindow(file: file, layers: layers, budget: $0) }
        }

        deinit { output.deallocate() }
    }

    public init(
        cacheDirectory: String, threads: Int? = nil, memoryBudget: Int? = nil, log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.cacheDirectory = cacheDirectory
        self.threads = threads
        self.memoryBudget = memoryBudget
        self.log = log
    }

    /// Accepts coordinators on `listener` until it is closed, serving one at a time. A
    /// coordinator that connects while another is served waits up to 3 s for that session to
    /// end (a coordinator reconnecting after a failure closes its old session just before),
    /// then is refused with the reason.
    public func serve(_ listener: TCPSocket) {
        sockets.withLock { $0.listener = listener }
        let running = DispatchGroup()
        while let connection = listener.accept() {
            running.enter()
            SystemCall.detachThread { [self] in
                defer { running.leave() }
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(3)
                while !sockets.withLock({ sockets in
                    guard sockets.connection == nil else { return false }
                    sockets.connection = connection
                    return true
                }) {
                    guard clock.now < deadline else {
                        log("refused a second coordinator while serving one")
                        _ = ShardWire.send(
                            ShardWire.Reply(status: .error, payload: Array("this worker is serving another coordinator (one at a time)".utf8)),
                            on: connection)
                        connection.close()
                        return
                    }
                    usleep(10_000)
                }
                serve(connection: connection)
                sockets.withLock { $0.connection = nil }
                connection.close()
            }
        }
        running.wait()
    }

    /// Stops serving at once: the listener closes and the current session ends with a TCP
    /// reset, as when the process is killed.
    public func stop() {
        let (listener, connection) = sockets.withLock { ($0.listener, $0.connection) }
        listener?.close()
        connection?.reset()
    }

    /// One coordinator's session, until it says `bye`, disconnects or sends something malformed.
    public func serve(connection: TCPSocket) {
        do {
            guard let first = try ShardWire.receiveRequest(on: connection), first.operation == .hello else {
                throw LLMError(.worker, "the session must start with hello")
            }
            let hello = try ShardWire.Hello(decoding: first.payload)
            let session = try open(hello, on: connection)
            log("serving slice \(hello.slice) of model \(hello.modelSHA256.prefix(12)), \(hello.capacity) positions")
            while let request = try ShardWire.receiveRequest(on: connection) {
                if request.operation == .bye { break }
                let reply: ShardWire.Reply
                do {
                    reply = try compute(request, session)
                } catch let error as LLMError {
                    reply = ShardWire.Reply(status: .error, payload: Array(error.description.utf8))
                    _ = ShardWire.send(reply, on: connection)
                    throw error
                }
                guard ShardWire.send(reply, on: connection) else { break }
            }
            log("session ended")
        } catch {
            log("session refused or failed: \(error)")
            _ = ShardWire.send(ShardWire.Reply(status: .error, payload: Array("\(error)".utf8)), on: connection)
        }
    }

    /// The session for `hello`: the loaded slice, the cached file, or one streamed now.
    private func open(_ hello: ShardWire.Hello, on connection: TCPSocket) throws -> Session {
        if let loaded, loaded.sha256 == hello.sliceSHA256, loaded.precision == hello.precision, loaded.capacity == hello.capacity {
            _ = ShardWire.send(ShardWire.Reply(status: .ok), on: connection)
            loaded.session.cache.reset()
            return loaded.session
        }
        loaded = nil
        let path = "\(cacheDirectory)/\(hello.sliceSHA256).gguf"
        if !SystemCall.isReadable(path) {
            guard ShardWire.send(ShardWire.Reply(status: .needSlice), on: connection) else { throw LLMError(.worker, "coordinator gone") }
            try receiveSlice(hello, to: path, on: connection)
            log("stored slice \(hello.sliceSHA256.prefix(12)) (\(hello.sliceBytes) bytes)")
        }
        // Read, not mapped, for the digest: the blocks' pages come in only as they are used
        // (with a memory budget, only a window of them).
        let digest = SHA256.hexString(try SystemCall.sha256(ofFile: path))
        guard digest == hello.sliceSHA256 else {
            SystemCall.remove(path)
            throw LLMError(.worker, "the cached slice \(path) does not match its SHA-256; removed it, reconnect to fetch it again")
        }
        let file = try GGUFFile(contentsOf: path)
        let (slice, model) = try ShardSliceFile.describe(file)
        guard model == hello.modelSHA256 else {
            throw LLMError(.worker, "the slice was cut from model \(model.prefix(12)), the coordinator runs \(hello.modelSHA256.prefix(12))")
        }
        guard slice == hello.slice else { throw LLMError(.worker, "the slice file holds \(slice), the coordinator asked for \(hello.slice)") }
        let session = try Session(
            file: file, slice: slice, capacity: hello.capacity, threads: threads, precision: hello.precision, memoryBudget: memoryBudget)
        if let window = session.window {
            log("memory budget \(memoryBudget ?? 0) bytes: \(window.window) of \(session.configuration.layers) blocks resident at a time")
        }
        loaded = (hello.sliceSHA256, hello.precision, hello.capacity, session)
        _ = ShardWire.send(ShardWire.Reply(status: .ok), on: connection)
        return session
    }

    /// Reads the slice's chunks straight into a file beside its place in the cache (never the
    /// whole slice in memory), checks the digest, and only then gives the file its name.
    private func receiveSlice(_ hello: ShardWire.Hello, to path: String, on connection: TCPSocket) throws {
        try SystemCall.makeDirectories(cacheDirectory)
        let writer = try AtomicFileWriter(path)
        var received = 0
        var hasher = SHA256()
        while received < hello.sliceBytes {
            guard let chunk = try ShardWire.receiveRequest(on: connection), chunk.operation == .slice else {
                throw LLMError(.worker, "the slice stopped after \(received) of \(hello.sliceBytes) bytes")
            }
            guard received + chunk.payload.count <= hello.sliceBytes else {
                throw LLMError(.worker, "the slice is longer than the \(hello.sliceBytes) bytes announced")
            }
            hasher.update(chunk.payload)
            try writer.append(chunk.payload)
            received += chunk.payload.count
        }
        let digest = SHA256.hexString(hasher.finish())
        guard digest == hello.sliceSHA256 else {
            throw LLMError(
                .worker, "the slice received has SHA-256 \(digest.prefix(12)), announced \(hello.sliceSHA256.prefix(12)): corrupt, not stored")
        }
        try writer.commit()
    }

    /// One block's attention or MLP over the request's tokens.
    private func compute(_ request: ShardWire.Request, _ s: Session) throws -> ShardWire.Reply {
        let c = s.configuration
        let n = request.tokens
        guard request.operation == .attention || request.operation == .feedForward else {
            throw LLMError(.worker, "unexpected operation \(request.operation) in the data plane")
        }
        guard request.layer < c.layers else { throw LLMError(.worker, "layer \(request.layer) of a \(c.layers)-layer model") }
        guard n > 0, n <= s.input.capacity else { throw LLMError(.worker, "\(n) tokens in one request; 1 to \(s.input.capacity) allowed") }
        guard request.payload.count == request.encoding.byteCount(values: n * c.embedding) else {
            throw LLMError(.worker, "\(request.payload.count) payload bytes for \(n) tokens × \(c.embedding) in \(request.encoding)")
        }
        s.input.reset(tokens: n, columns: c.embedding)
        request.payload.withUnsafeBytes { request.encoding.decode($0, count: n * c.embedding, into: s.input.floats) }
        if request.operation == .attention {
            if request.layer == 0 && request.first != s.cache.count {
                guard request.first < s.cache.count else {
                    throw LLMError(.worker, "a pass at position \(request.first), but the cache holds only \(s.cache.count)")
                }
                s.cache.truncate(to: request.first)
            }
            guard request.first == s.cache.count else {
                throw LLMError(.worker, "layer \(request.layer) at position \(request.first), the pass started at \(s.cache.count)")
            }
            guard request.first + n <= s.cache.capacity else {
                throw LLMError.contextFull(needed: request.first + n, capacity: s.cache.capacity)
            }
            s.window?.entering(request.layer)
            s.shard.attention(layer: request.layer, input: s.input, first: request.first, cache: s.cache, into: s.output)
            if request.layer == c.layers - 1 { s.cache.advance(by: n) }
        } else {
            if s.shard.queryHeads == 0 { s.window?.entering(request.layer) }
            s.shard.feedForward(layer: request.layer, input: s.input, into: s.output)
            s.window?.leaving(request.layer)
        }
        var payload: [UInt8] = []
        payload.reserveCapacity(request.encoding.byteCount(values: n * c.embedding))
        request.encoding.encode(s.output, count: n * c.embedding, into: &payload)
        return ShardWire.Reply(status: .ok, encoding: request.encoding, payload: payload)
    }
}
