import CleaveSupport
import CleaveTensor

/// Encodes bottleneck tensors into feature frames and decodes them back.
///
/// The byte layout is specified in `docs/wire-format.md`. In the common case
/// (affine uint8, per-tensor parameters, zstd, shape and model implied by the
/// device's assignment) the header is 12 bytes and the checksum 4.
public enum BottleneckCodec {
    static let magic: UInt8 = 0xC7
    static let version: UInt8 = 1

    enum Flag {
        static let zstd: UInt8 = 1 << 0
        static let perChannel: UInt8 = 1 << 1
        static let shape: UInt8 = 1 << 2
        static let context: UInt8 = 1 << 3
        static let region: UInt8 = 1 << 4
        static let known: UInt8 = 0x1F
    }

    /// The channel axis for per-channel parameters: 1 (NCHW) for rank ≥ 2, else 0.
    static func channelAxis(rank: Int) -> Int { rank >= 2 ? 1 : 0 }

    // MARK: - Encoding

    /// Encodes float32 `tensor` as a frame for request `requestID`.
    public static func encode(_ tensor: Tensor, requestID: UInt64, options: FrameOptions = FrameOptions()) -> [UInt8] {
        precondition(tensor.dtype == .float32, "feature frames carry float32 tensors")
        if let region = options.region {
            precondition(
                tensor.rank == 4 && tensor.shape[2] == region.height && tensor.shape[3] == region.width && region.parts >= 1,
                "a part's tensor is NCHW with the region's height and width")
            precondition(!options.includeShape, "a part's whole shape is implied by the assignment")
        }
        var writer = ByteWriter()
        var flags: UInt8 = 0
        if options.zstdLevel != nil { flags |= Flag.zstd }
        if options.perChannel && options.codec.isAffine { flags |= Flag.perChannel }
        if options.includeShape { flags |= Flag.shape }
        if options.context != nil { flags |= Flag.context }
        if options.region != nil { flags |= Flag.region }
        writer.u8(magic)
        writer.u8(version << 4 | options.codec.rawValue)
        writer.u8(flags)
        writer.varint(requestID)
        if let context = options.context {
            writer.append(contentsOf: context.modelDigest)
            writer.u8(context.splitID)
        }
        if options.includeShape {
            writer.u8(UInt8(tensor.rank))
            for dimension in tensor.shape { writer.varint(UInt64(dimension)) }
        }
        if let region = options.region {
            for field in [region.top, region.left, region.height, region.width, region.parts] { writer.varint(UInt64(field)) }
        }
        let values = tensor.scalars(as: Float.self)
        var raw: [UInt8]
        switch options.codec {
        case .float32:
            raw = []
            raw.reserveCapacity(values.count * 4)
            for value in values {
                let bits = value.bitPattern
                raw += [
                    UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8), UInt8(truncatingIfNeeded: bits >> 16),
                    UInt8(truncatingIfNeeded: bits >> 24),
                ]
            }
        case .float16:
            raw = []
            raw.reserveCapacity(values.count * 2)
            for value in values {
                let bits = Float16(value).bitPattern
                raw += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
            }
        case .uint8, .int4:
            let groups = flags & Flag.perChannel != 0 ? channelGroups(tensor.shape) : [Array(values.indices)]
            var quantized = [UInt8](repeating: 0, count: values.count)
            if flags & Flag.perChannel != 0 { writer.varint(UInt64(groups.count)) }
            for group in groups {
                let parameters = AffineRange(range: group.map { values[$0] }, levels: options.codec.levels)
                writer.float32(parameters.scale)
                writer.u8(parameters.zeroPoint)
                for index in group { quantized[index] = parameters.quantize(values[index], levels: options.codec.levels) }
            }
            raw = options.codec == .uint8 ? quantized : packNibbles(quantized)
        }
        // zstd only when it saves bytes: a frame of a few dozen bytes usually grows under it.
        var payload = raw
        if let level = options.zstdLevel {
            let compressed = Zstd.compress(raw, level: level)
            if compressed.count < raw.count { payload = compressed } else { writer.bytes[2] &= ~Flag.zstd }
        }
        writer.varint(UInt64(payload.count))
        writer.append(contentsOf: payload)
        writer.integer(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// Element indices of each channel (axis 1, or 0 for vectors).
    static func channelGroups(_ shape: [Int]) -> [[Int]] {
        let axis = channelAxis(rank: shape.count)
        guard !shape.isEmpty else { return [[0]] }
        let outer = shape[..<axis].reduce(1, *)
        let channels = shape[axis]
        let inner = shape[(axis + 1)...].reduce(1, *)
        return (0..<channels).map { channel in
            (0..<outer).flatMap { block in (0..<inner).map { (block * channels + channel) * inner + $0 } }
        }
    }

    static func packNibbles(_ values: [UInt8]) -> [UInt8] {
        stride(from: 0, to: values.count, by: 2).map { index in
            values[index] & 0x0F | (index + 1 < values.count ? values[index + 1] << 4 : 0)
        }
    }

    // MARK: - Decoding

    /// Decodes and validates `bytes`. `expectedShape` is the shape the assignment implies;
    /// it is required when the frame carries none, and must match when it does.
    public static func decode(_ bytes: [UInt8], expectedShape: [Int]? = nil, limits: FrameLimits = FrameLimits()) throws(FrameError) -> DecodedFrame {
        guard bytes.count >= 8 else { throw .truncated(needed: 8, available: bytes.count) }
        guard bytes[0] == magic else { throw .badMagic(bytes[0]) }
        let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[bytes.count - 4 + $1]) << UInt32(8 * $1) }
        let computed = CRC32C.checksum(bytes[..<(bytes.count - 4)])
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }

        var reader = FrameReader(bytes, end: bytes.count - 4)
        _ = try reader.u8()
        let versionAndCodec = try reader.u8()
        guard versionAndCodec >> 4 == version else { throw .unsupportedVersion(Int(versionAndCodec >> 4)) }
        guard let codec = FrameCodec(rawValue: versionAndCodec & 0x0F) else { throw .unknownCodec(Int(versionAndCodec & 0x0F)) }
        let flags = try reader.u8()
        guard flags & ~Flag.known == 0 else { throw .reservedFlags(flags & ~Flag.known) }
        let requestID = try reader.varint("request id")
        var context: FrameContext?
        if flags & Flag.context != 0 {
            let digest = Array(try reader.take(8))
            context = FrameContext(modelDigest: digest, splitID: try reader.u8())
        }
        var shape: [Int]
        if flags & Flag.shape != 0 {
            let rank = Int(try reader.u8())
            guard rank <= limits.maximumRank else { throw .limitExceeded(field: "rank", value: rank, limit: limits.maximumRank) }
            shape = []
            var elements = 1
            for _ in 0..<rank {
                // A zero is an empty tensor (the encoder writes what it is given); every
                // dimension is bounded, so the product cannot overflow.
                let dimension = try reader.bounded("dimension", limit: limits.maximumElements)
                elements *= dimension
                guard elements <= limits.maximumElements else {
                    throw .limitExceeded(field: "element count", value: elements, limit: limits.maximumElements)
                }
                shape.append(dimension)
            }
            if let expectedShape, expectedShape != shape { throw .shapeMismatch(expected: expectedShape, got: shape) }
        } else {
            guard let expectedShape else { throw .shapeUnknown }
            shape = expectedShape
        }
        var region: FrameRegion?
        if flags & Flag.region != 0 {
            guard shape.count == 4 else { throw .invalidRegion("a part needs a rank-4 (NCHW) tensor, the shape is \(shape)") }
            let (height, width) = (shape[2], shape[3])
            let top = try reader.bounded("region top", limit: height - 1)
            let left = try reader.bounded("region left", limit: width - 1)
            let rows = try reader.bounded("region height", limit: height - top)
            let columns = try reader.bounded("region width", limit: width - left)
            let parts = try reader.bounded("part count", limit: height * width)
            guard rows >= 1, columns >= 1, parts >= 1 else {
                throw .invalidRegion("empty region (\(rows)x\(columns)) or no parts (\(parts))")
            }
            region = FrameRegion(top: top, left: left, height: rows, width: columns, parts: parts)
            shape[2] = rows
            shape[3] = columns
        }
        let count = shape.reduce(1, *)
        guard count <= limits.maximumElements else { throw .limitExceeded(field: "element count", value: count, limit: limits.maximumElements) }

        var parameters: [AffineRange] = []
        if codec.isAffine {
            var groups = 1
            if flags & Flag.perChannel != 0 {
                let channels = shape.isEmpty ? 1 : shape[channelAxis(rank: shape.count)]
                groups = try reader.bounded("channel count", limit: limits.maximumElements)
                guard groups == channels else { throw .invalidParameters("\(groups) channel parameters for \(channels) channels") }
            }
            for _ in 0..<groups {
                let scale = try reader.f32()
                let zero = try reader.u8()
                guard scale.isFinite, scale >= 0 else { throw .invalidParameters("scale \(scale)") }
                guard Int(zero) <= codec.levels else { throw .invalidParameters("zero point \(zero) above \(codec.levels)") }
                parameters.append(AffineRange(scale: scale, zeroPoint: zero))
            }
        } else if flags & Flag.perChannel != 0 {
            throw .invalidParameters("per-channel flag on a non-affine codec")
        }
        let payloadLength = try reader.bounded("payload length", limit: limits.maximumPayloadBytes)
        let payload = try reader.take(payloadLength)
        guard reader.position == reader.end else { throw .trailingBytes(reader.end - reader.position) }
        let rawSize = codec.rawBytes(count: count)
        let raw: [UInt8]
        if flags & Flag.zstd != 0 {
            raw = try Zstd.decompress(payload, expectedSize: rawSize)
        } else {
            guard payload.count == rawSize else { throw .lengthMismatch(payload: payload.count, expected: rawSize) }
            raw = Array(payload)
        }
        let tensor = Tensor(shape: shape, scalars: dequantize(raw, codec: codec, count: count, shape: shape, parameters: parameters))
        return DecodedFrame(
            requestID: requestID, codec: codec, compressed: flags & Flag.zstd != 0, context: context, region: region, tensor: tensor,
            byteCount: bytes.count)
    }

    static func dequantize(_ raw: [UInt8], codec: FrameCodec, count: Int, shape: [Int], parameters: [AffineRange]) -> [Float] {
        switch codec {
        case .float32:
            return (0..<count).map { index in
                Float(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(raw[index * 4 + $1]) << UInt32(8 * $1) })
            }
        case .float16:
            return (0..<count).map { index in Float(Float16(bitPattern: UInt16(raw[index * 2]) | UInt16(raw[index * 2 + 1]) << 8)) }
        case .uint8, .int4:
            let levels: [UInt8] =
                codec == .uint8
                ? raw
                : (0..<count).map { index in
                    index % 2 == 0 ? raw[index / 2] & 0x0F : raw[index / 2] >> 4
                }
            if parameters.count == 1 { return levels.map { parameters[0].dequantize($0) } }
            var values = [Float](repeating: 0, count: count)
            for (channel, group) in channelGroups(shape).enumerated() {
                for index in group { values[index] = parameters[channel].dequantize(levels[index]) }
            }
            return values
        }
    }
}
