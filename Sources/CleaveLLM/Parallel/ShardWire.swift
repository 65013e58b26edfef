import CleaveSupport

/// How activations travel between the coordinator and a shard worker.
public enum SyncEncoding: String, Sendable, CaseIterable, Codable {
    /// float32 little-endian: exact, 4 bytes per value.
    case f32
    /// ggml's Q8_0: per block of 32 values a float16 scale `d = amax / 127` and 32 signed
    /// bytes `round(x / d)`: 34 bytes per 32 values (what distributed-llama sends).
    case q8_0

    var code: UInt8 { self == .f32 ? 0 : 1 }

    init?(code: UInt8) {
        switch code {
        case 0: self = .f32
        case 1: self = .q8_0
        default: return nil
        }
    }

    /// Bytes that `count` values take (`count` a multiple of 32 for Q8_0).
    public func byteCount(values count: Int) -> Int { self == .f32 ? 4 * count : count / 32 * 34 }

    /// Appends `count` values (a multiple of 32 for Q8_0).
    func encode(_ values: UnsafePointer<Float>, count: Int, into out: inout [UInt8]) {
        switch self {
        case .f32:
            out.append(contentsOf: UnsafeRawBufferPointer(start: values, count: 4 * count))
        case .q8_0:
            for block in stride(from: 0, to: count, by: 32) {
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(values[block + j])) }
                let d = amax / 127
                let inverse: Float = amax != 0 ? 127 / amax : 0
                let scale = Float16(d).bitPattern
                out.append(UInt8(truncatingIfNeeded: scale))
                out.append(UInt8(truncatingIfNeeded: scale >> 8))
                for j in 0..<32 { out.append(UInt8(bitPattern: Int8((values[block + j] * inverse).rounded(.toNearestOrEven)))) }
            }
        }
    }

    /// Rounds `count` values in place as a trip over the wire would (nothing for f32).
    func roundTrip(_ values: UnsafeMutablePointer<Float>, count: Int, scratch: inout [UInt8]) {
        guard self != .f32 else { return }
        scratch.removeAll(keepingCapacity: true)
        encode(values, count: count, into: &scratch)
        scratch.withUnsafeBytes { decode($0, count: count, into: values) }
    }

    /// Decodes `count` values from `bytes` (exactly ``byteCount(values:)`` of them).
    func decode(_ bytes: UnsafeRawBufferPointer, count: Int, into values: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32:
            for i in 0..<count { values[i] = bytes.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .q8_0:
            for b in 0..<(count / 32) {
                let base = 34 * b
                let d = Float(Float16(bitPattern: bytes.loadUnaligned(fromByteOffset: base, as: UInt16.self)))
                for j in 0..<32 { values[32 * b + j] = d * Float(Int8(bitPattern: bytes[base + 2 + j])) }
            }
        }
    }
}

/// The coordinator ↔ worker protocol on one TCP connection (all integers little-endian).
///
/// A request is a 16-byte header — operation (u8), encoding (u8), layer (u16), first
/// position (u32), tokens (u32), payload bytes (u32) — and its payload; a reply an 8-byte
/// header — status (u8), encoding (u8), reserved (u16), payload bytes (u32) — and its
/// payload. The session opens with `hello` (which model, which slice, its digest); the
/// worker answers `ok` when it holds that slice or `needSlice`, and the coordinator then
/// streams the slice file in `slice` requests; every request of the data plane carries a
/// block's normed input (tokens × embedding) and is answered with the slice's partial
/// output of the same shape. Every field is checked against limits before anything is
/// allocated; a bad one ends the session with an `error` reply naming it.
enum ShardWire {
    static let version: UInt8 = 1
    static let requestHeaderBytes = 16
    static let replyHeaderBytes = 8
    /// Largest payload of one request or reply.
    static let maximumPayload = 16 << 20

    enum Operation: UInt8 {
        case hello = 1
        case slice = 2
        case attention = 3
        case feedForward = 4
        case bye = 5
    }

    enum Status: UInt8 {
        case ok = 0
        case needSlice = 1
        case error = 2
    }

    struct Request {
        var operation: Operation
        var encoding: SyncEncoding = .f32
        var layer = 0
        var first = 0
        var tokens = 0
        var payload: [UInt8] = []
    }

    struct Reply {
        var status: Status
        var encoding: SyncEncoding = .f32
        var payload: [UInt8] = []

        var text: String { String(decoding: payload, as: UTF8.self) }
    }

    /// What a coordinator says first: which slice of which model it wants the worker to run.
    struct Hello: Equatable {
        var modelSHA256: String
        var sliceSHA256: String
        var sliceBytes: Int
        var slice: ShardSlice
        /// KV-cache positions to reserve.
        var capacity: Int
        var precision: ActivationPrecision

        func encoded() -> [UInt8] {
            var w = ByteWriter()
            w.bytes += Array("CLVS".utf8)
            w.u8(ShardWire.version)
            w.bytes += hexBytes(modelSHA256) + hexBytes(sliceSHA256)
            w.integer(UInt64(sliceBytes))
            for bound in [slice.kvHeads.lowerBound, slice.kvHeads.upperBound, slice.feedForward.lowerBound, slice.feedForward.upperBound, capacity] {
                w.integer(UInt32(bound))
            }
            w.u8(precision == .q8 ? 0 : 1)
            return w.bytes
        }

        init(modelSHA256: String, sliceSHA256: String, sliceBytes: Int, slice: ShardSlice, capacity: Int, precision: ActivationPrecision) {
            self.modelSHA256 = modelSHA256
            self.sliceSHA256 = sliceSHA256
            self.sliceBytes = sliceBytes
            self.slice = slice
            self.capacity = capacity
            self.precision = precision
        }

        init(decoding bytes: [UInt8]) throws {
            var r = ByteReader(bytes)
            do {
                guard Array(try r.take(4)) == Array("CLVS".utf8) else { throw LLMError(.worker, "hello: not a Cleave shard session") }
                let version = try r.integer(UInt8.self)
                guard version == ShardWire.version else {
                    throw LLMError(.worker, "hello: protocol version \(version), this worker speaks \(ShardWire.version)")
                }
                modelSHA256 = SHA256.hexString(Array(try r.take(32)))
                sliceSHA256 = SHA256.hexString(Array(try r.take(32)))
                let size = try r.integer(UInt64.self)
                guard size <= UInt64(Int32.max) * 64 else { throw LLMError(.worker, "hello: slice of \(size) bytes is too large") }
                sliceBytes = Int(size)
                var bounds: [Int] = []
                for _ in 0..<5 { bounds.append(Int(try r.integer(UInt32.self))) }
                guard bounds[0] <= bounds[1], bounds[2] <= bounds[3], bounds[4] > 0, bounds[4] <= 1 << 20 else {
                    throw LLMError(.worker, "hello: slice bounds \(bounds.prefix(4)) or capacity \(bounds[4]) out of range")
                }
                slice = ShardSlice(kvHeads: bounds[0]..<bounds[1], feedForward: bounds[2]..<bounds[3])
                capacity = bounds[4]
                precision = try r.integer(UInt8.self) == 0 ? .q8 : .float
                guard r.remaining == 0 else { throw LLMError(.worker, "hello: \(r.remaining) bytes too many") }
            } catch let error as ByteReadError {
                throw LLMError(.worker, "hello is truncated: \(error)")
            }
        }
    }

    /// 32 raw bytes of a 64-digit hex digest (zeros for anything else).
    static func hexBytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return [UInt8](repeating: 0, count: 32) }
        func value(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : c >= 65 ? c - 55 : c - 48 }
        return (0..<32).map { value(digits[2 * $0]) << 4 | value(digits[2 * $0 + 1]) & 15 }
    }

    // MARK: - Reading and writing on a socket

    static func send(_ request: Request, on socket: TCPSocket) -> Bool {
        var header = ByteWriter(capacity: requestHeaderBytes)
        header.u8(request.operation.rawValue)
        header.u8(request.encoding.code)
        header.integer(UInt16(request.layer))
        header.integer(UInt32(request.first))
        header.integer(UInt32(request.tokens))
        header.integer(UInt32(request.payload.count))
        return header.bytes.withUnsafeBytes { socket.sendAll($0) } && request.payload.withUnsafeBytes { socket.sendAll($0) }
    }

    static func send(_ reply: Reply, on socket: TCPSocket) -> Bool {
        var header = ByteWriter(capacity: replyHeaderBytes)
        header.u8(reply.status.rawValue)
        header.u8(reply.encoding.code)
        header.integer(UInt16(0))
        header.integer(UInt32(reply.payload.count))
        return header.bytes.withUnsafeBytes { socket.sendAll($0) } && reply.payload.withUnsafeBytes { socket.sendAll($0) }
    }

    /// The next request, nil at the end of the stream; throws on a malformed header.
    static func receiveRequest(on socket: TCPSocket) throws -> Request? {
        var header = [UInt8](repeating: 0, count: requestHeaderBytes)
        guard header.withUnsafeMutableBytes({ socket.receiveAll(into: $0) }) else { return nil }
        var r = ByteReader(header)
        let (op, enc) = (try r.integer(UInt8.self), try r.integer(UInt8.self))
        let layer = Int(try r.integer(UInt16.self))
        let first = Int(try r.integer(UInt32.self))
        let tokens = Int(try r.integer(UInt32.self))
        let size = Int(try r.integer(UInt32.self))
        guard let operation = Operation(rawValue: op) else { throw LLMError(.worker, "unknown operation \(op)") }
        guard let encoding = SyncEncoding(code: enc) else { throw LLMError(.worker, "unknown sync encoding \(enc)") }
        guard size <= maximumPayload else { throw LLMError(.worker, "payload of \(size) bytes is over the limit of \(maximumPayload)") }
        var payload = [UInt8](repeating: 0, count: size)
        guard payload.withUnsafeMutableBytes({ socket.receiveAll(into: $0) }) else { return nil }
        return Request(operation: operation, encoding: encoding, layer: layer, first: first, tokens: tokens, payload: payload)
    }

    /// The next reply; throws when the worker is gone, silent past the timeout, or malformed.
    static func receiveReply(on socket: TCPSocket, from name: String) throws -> Reply {
        var header = [UInt8](repeating: 0, count: replyHeaderBytes)
        guard header.withUnsafeMutableBytes({ socket.receiveAll(into: $0) }) else {
            throw LLMError(.worker, "worker \(name) closed the connection or stopped answering")
        }
        var r = ByteReader(header)
        let (code, enc) = (try r.integer(UInt8.self), try r.integer(UInt8.self))
        _ = try r.integer(UInt16.self)
        let size = Int(try r.integer(UInt32.self))
        guard let status = Status(rawValue: code), let encoding = SyncEncoding(code: enc), size <= maximumPayload else {
            throw LLMError(.worker, "worker \(name) sent a malformed reply (status \(code), encoding \(enc), \(size) bytes)")
        }
        var payload = [UInt8](repeating: 0, count: size)
        guard payload.withUnsafeMutableBytes({ socket.receiveAll(into: $0) }) else {
            throw LLMError(.worker, "worker \(name) closed the connection in the middle of a reply")
        }
        return Reply(status: status, encoding: encoding, payload: payload)
    }

    /// Bytes on the wire for one sync (request and reply, headers included) of `tokens` tokens.
    static func syncBytes(tokens: Int, embedding: Int, encoding: SyncEncoding) -> Int {
        requestHeaderBytes + replyHeaderBytes + 2 * encoding.byteCount(values: tokens * embedding)
    }
}
