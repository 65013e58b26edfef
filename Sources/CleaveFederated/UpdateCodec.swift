import CleaveCodec
import CleaveSupport
import CleaveTensor

/// How a client's update is squeezed for the wire.
public enum UpdateCompression: Sendable, Equatable, CustomStringConvertible {
    /// Every value as it is (4 bytes each).
    case float32
    /// IEEE half precision (2 bytes each).
    case float16
    /// Affine 8-bit levels, one scale and zero point per tensor or per output channel.
    case int8(perChannel: Bool)
    /// Affine 4-bit levels (two per byte), per tensor or per output channel.
    case int4(perChannel: Bool)
    /// The `fraction` largest magnitudes of each tensor (at least one value), as index gaps and half-precision values.
    case topK(fraction: Double)
    /// One bit per value (its sign) and one scale per tensor: the mean magnitude.
    case sign

    /// The name used on the command line (`float32`, `float16`, `int8`, `int8-channel`, `int4`, `int4-channel`, `topk:0.01`, `sign`).
    public var description: String {
        switch self {
        case .float32: "float32"
        case .float16: "float16"
        case .int8(let perChannel): perChannel ? "int8-channel" : "int8"
        case .int4(let perChannel): perChannel ? "int4-channel" : "int4"
        case .topK(let fraction): "topk:\(fraction)"
        case .sign: "sign"
        }
    }

    /// Parses a command-line name (see ``description``).
    public init(name: String) throws {
        switch name {
        case "float32": self = .float32
        case "float16": self = .float16
        case "int8": self = .int8(perChannel: false)
        case "int8-channel": self = .int8(perChannel: true)
        case "int4": self = .int4(perChannel: false)
        case "int4-channel": self = .int4(perChannel: true)
        case "sign": self = .sign
        default:
            guard name.hasPrefix("topk:"), let fraction = Double(name.dropFirst(5)), fraction > 0, fraction <= 1 else {
                throw FederatedError(
                    "unknown update compression '\(name)': choose float32, float16, int8, int8-channel, int4, int4-channel, topk:F (0 < F ≤ 1) or sign"
                )
            }
            self = .topK(fraction: fraction)
        }
    }

    /// Whether the wire value differs from the value sent (what error feedback makes up for).
    public var isLossy: Bool { self != .float32 }

    var code: UInt8 {
        switch self {
        case .float32: 0
        case .float16: 1
        case .int8: 2
        case .int4: 3
        case .topK: 4
        case .sign: 5
        }
    }
}

/// The update frame: a client's delta for one model and one base version, compressed,
/// with a CRC-32C (layout in `docs/wire-format.md`, "Update frame").
///
/// The frame names the model by the first 8 bytes of its layout's SHA-256, so that an
/// update for another architecture is refused before any value is read.
public enum UpdateCodec {
    static let magic: UInt8 = 0xFD
    static let version: UInt8 = 1

    /// The header fields of an update frame.
    public struct Header: Sendable, Equatable {
        public var client: Int
        public var baseVersion: Int
        public var examples: Int
    }

    /// Encodes `update` (laid out as `layout`) with `compression`.
    public static func encode(_ update: ClientUpdate, layout: WeightLayout, compression: UpdateCompression) -> [UInt8] {
        precondition(update.delta.count == layout.count, "an update is encoded with its own model's layout")
        var writer = ByteWriter()
        writer.u8(magic)
        writer.u8(version << 4 | compression.code)
        var flags: UInt8 = 0
        switch compression {
        case .int8(true), .int4(true): flags |= 1
        default: break
        }
        writer.u8(flags)
        writer.append(contentsOf: layout.digest)
        writer.varint(UInt64(update.client))
        writer.varint(UInt64(update.baseVersion))
        writer.varint(UInt64(update.examples))
        if case .topK(let fraction) = compression { writer.float64(fraction) }
        for entry in layout.entries {
            let values = Array(update.delta[entry.range])
            switch compression {
            case .float32: for value in values { writer.float32(value) }
            case .float16: for value in values { writer.integer(Float16(value).bitPattern) }
            case .int8(let perChannel): writeAffine(values, shape: entry.shape, levels: 255, perChannel: perChannel, into: &writer)
            case .int4(let perChannel): writeAffine(values, shape: entry.shape, levels: 15, perChannel: perChannel, into: &writer)
            case .topK(let fraction): writeTopK(values, fraction: fraction, into: &writer)
            case .sign: writeSigns(values, into: &writer)
            }
        }
        writer.integer(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// Decodes a frame for the model `layout`; `expectedBaseVersion`, when given, must match.
    ///
    /// - Throws: ``FederatedError`` naming what is wrong: truncation, checksum, another
    ///   model, another version, a count or index out of range, a non-finite value.
    public static func decode(_ bytes: [UInt8], layout: WeightLayout, expectedBaseVersion: Int? = nil) throws -> ClientUpdate {
        guard bytes.count >= 4 + 3 + 8 else { throw FederatedError("an update frame of \(bytes.count) bytes is truncated") }
        let stored =
            UInt32(bytes[bytes.count - 4]) | UInt32(bytes[bytes.count - 3]) << 8 | UInt32(bytes[bytes.count - 2]) << 16
            | UInt32(bytes[bytes.count - 1]) << 24
        guard CRC32C.checksum(bytes[..<(bytes.count - 4)]) == stored else { throw FederatedError("the update frame's checksum does not match") }
        var reader = ByteReader(bytes, end: bytes.count - 4)
        do {
            guard try reader.integer(UInt8.self) == magic else { throw FederatedError("not an update frame (bad magic byte)") }
            let versionAndCodec = try reader.integer(UInt8.self)
            guard versionAndCodec >> 4 == version else { throw FederatedError("update frame version \(versionAndCodec >> 4) is not supported") }
            let code = versionAndCodec & 0x0F
            let flags = try reader.integer(UInt8.self)
            guard flags & ~1 == 0 else { throw FederatedError("unknown update frame flags 0x\(String(flags, radix: 16))") }
            guard Array(try reader.take(8)) == layout.digest else {
                throw FederatedError("the update is for another model (its layout digest differs from this run's)")
            }
            let client = try count(reader.varint(), "client", limit: 1 << 31)
            let baseVersion = try count(reader.varint(), "base version", limit: 1 << 40)
            let examples = try count(reader.varint(), "example count", limit: 1 << 40)
            if let expectedBaseVersion, baseVersion != expectedBaseVersion {
                throw FederatedError("client \(client)'s update is for round \(baseVersion + 1); the server is at round \(expectedBaseVersion + 1)")
            }
            var fraction = 0.0
            if code == 4 {
                fraction = try reader.float64()
                guard fraction > 0, fraction <= 1 else { throw FederatedError("top-k fraction \(fraction) is out of range") }
            }
            var delta: [Float] = []
            delta.reserveCapacity(layout.count)
            for entry in layout.entries {
                switch code {
                case 0: for _ in 0..<entry.count { delta.append(try reader.float32()) }
                case 1: for _ in 0..<entry.count { delta.append(Float(Float16(bitPattern: try reader.integer(UInt16.self)))) }
                case 2, 3:
                    delta += try readAffine(&reader, shape: entry.shape, levels: code == 2 ? 255 : 15, perChannel: flags & 1 != 0, name: entry.name)
                case 4: delta += try readTopK(&reader, count: entry.count, name: entry.name)
                case 5: delta += try readSigns(&reader, count: entry.count)
                default: throw FederatedError("unknown update compression code \(code)")
                }
            }
            guard reader.offset == reader.end else { throw FederatedError("\(reader.end - reader.offset) bytes follow the update's last tensor") }
            let update = ClientUpdate(client: client, examples: examples, delta: delta, baseVersion: baseVersion)
            try update.validate(modelSize: layout.count)
            return update
        } catch let error as ByteReadError {
            throw FederatedError("the update frame is truncated (\(error))")
        }
    }

    private static func count(_ value: UInt64, _ field: String, limit: UInt64) throws -> Int {
        guard value < limit else { throw FederatedError("the update's \(field) \(value) is out of range") }
        return Int(value)
    }

    // MARK: - Dense affine levels

    private static func channelRanges(_ shape: [Int], count: Int, perChannel: Bool) -> [Range<Int>] {
        guard perChannel, shape.count >= 2, shape[0] > 0 else { return [0..<count] }
        let inner = count / shape[0]
        return (0..<shape[0]).map { ($0 * inner)..<(($0 + 1) * inner) }
    }

    private static func writeAffine(_ values: [Float], shape: [Int], levels: Int, perChannel: Bool, into writer: inout ByteWriter) {
        var quantized = [UInt8](repeating: 0, count: values.count)
        for range in channelRanges(shape, count: values.count, perChannel: perChannel) {
            let parameters = AffineRange(range: values[range], levels: levels)
            writer.float32(parameters.scale)
            writer.u8(parameters.zeroPoint)
            for index in range { quantized[index] = parameters.quantize(values[index], levels: levels) }
        }
        if levels == 255 {
            writer.append(contentsOf: quantized)
        } else {
            for index in stride(from: 0, to: quantized.count, by: 2) {
                writer.u8(quantized[index] | (index + 1 < quantized.count ? quantized[index + 1] << 4 : 0))
            }
        }
    }

    private static func readAffine(_ reader: inout ByteReader<[UInt8]>, shape: [Int], levels: Int, perChannel: Bool, name: String) throws -> [Float] {
        let count = shape.reduce(1, *)
        let ranges = channelRanges(shape, count: count, perChannel: perChannel)
        var parameters: [AffineRange] = []
        for _ in ranges {
            let scale = try reader.float32()
            let zero = try reader.integer(UInt8.self)
            guard scale.isFinite, scale > 0, Int(zero) <= levels else {
                throw FederatedError("\(name): scale \(scale) or zero point \(zero) is invalid")
            }
            parameters.append(AffineRange(scale: scale, zeroPoint: zero))
        }
        var levelsRead: [UInt8]
        if levels == 255 {
            levelsRead = Array(try reader.take(count))
        } else {
            let packed = try reader.take((count + 1) / 2)
            levelsRead = []
            levelsRead.reserveCapacity(count)
            for byte in packed {
                levelsRead.append(byte & 0x0F)
                levelsRead.append(byte >> 4)
            }
            levelsRead.removeLast(levelsRead.count - count)
        }
        var values = [Float](repeating: 0, count: count)
        for (range, parameter) in zip(ranges, parameters) {
            for index in range { values[index] = parameter.dequantize(levelsRead[index]) }
        }
        return values
    }

    // MARK: - Top-k

    private static func writeTopK(_ values: [Float], fraction: Double, into writer: inout ByteWriter) {
        let keep = min(values.count, max(1, Int((fraction * Double(values.count)).rounded())))
        let chosen = values.indices.sorted { abs(values[$0]) > abs(values[$1]) || (abs(values[$0]) == abs(values[$1]) && $0 < $1) }
            .prefix(keep).sorted()
        writer.varint(UInt64(chosen.count))
        var previous = -1
        for index in chosen {
            writer.varint(UInt64(index - previous - 1))
            writer.integer(Float16(values[index]).bitPattern)
            previous = index
        }
    }

    private static func readTopK(_ reader: inout ByteReader<[UInt8]>, count: Int, name: String) throws -> [Float] {
        let kept = try reader.varint()
        guard kept <= UInt64(count) else { throw FederatedError("\(name): \(kept) kept values for a tensor of \(count)") }
        var values = [Float](repeating: 0, count: count)
        var position = -1
        for _ in 0..<Int(kept) {
            let gap = try reader.varint()
            guard gap < UInt64(count) else { throw FederatedError("\(name): index gap \(gap) leaves the tensor of \(count)") }
            position += Int(gap) + 1
            guard position < count else { throw FederatedError("\(name): index \(position) leaves the tensor of \(count)") }
            values[position] = Float(Float16(bitPattern: try reader.integer(UInt16.self)))
        }
        return values
    }

    // MARK: - Sign and scale

    private static func writeSigns(_ values: [Float], into writer: inout ByteWriter) {
        let finite = values.filter(\.isFinite)
        let scale = finite.isEmpty ? 0 : Float(finite.reduce(0.0) { $0 + Double(abs($1)) } / Double(finite.count))
        writer.float32(scale)
        for start in stride(from: 0, to: values.count, by: 8) {
            var byte: UInt8 = 0
            for bit in 0..<min(8, values.count - start) where values[start + bit] < 0 { byte |= 1 << bit }
            writer.u8(byte)
        }
    }

    private static func readSigns(_ reader: inout ByteReader<[UInt8]>, count: Int) throws -> [Float] {
        let scale = try reader.float32()
        guard scale.isFinite, scale >= 0 else { throw FederatedError("sign update scale \(scale) is invalid") }
        let bits = try reader.take((count + 7) / 8)
        return (0..<count).map { index in bits[bits.startIndex + index / 8] >> (index % 8) & 1 == 1 ? -scale : scale }
    }
}

// MARK: - Error feedback

/// What a board keeps between rounds so that compression loses nothing for good: the part
/// of each update the wire dropped is added to the next update (error feedback, as in
/// Seide et al.'s 1-bit SGD and Stich et al.'s sparsified SGD with memory).
public struct ErrorFeedback: Sendable, Codable, Equatable {
    private var residual: [Float] = []

    public init() {}

    /// Compresses `update` after adding the residual kept from earlier rounds; keeps what
    /// the frame could not carry. Returns the frame's bytes.
    public mutating func encode(_ update: ClientUpdate, layout: WeightLayout, compression: UpdateCompression) throws -> [UInt8] {
        var corrected = update
        if residual.count == update.delta.count {
            for index in corrected.delta.indices { corrected.delta[index] += residual[index] }
        }
        let frame = UpdateCodec.encode(corrected, layout: layout, compression: compression)
        let sent = try UpdateCodec.decode(frame, layout: layout).delta
        residual = zip(corrected.delta, sent).map { $0 - $1 }
        return frame
    }

    /// The sum of what is held back (for tests and logs).
    public var heldBackMagnitude: Double { residual.reduce(0) { $0 + Double(abs($1)) } }
}

extension WeightLayout {
    /// The first 8 bytes of the SHA-256 of the tensors' names and shapes: the model's identity in update frames.
    public var digest: [UInt8] {
        let text = entries.map { "\($0.name):\($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ";")
        return Array(SHA256.hash(Array(text.utf8)).prefix(8))
    }
}
