import CleaveTensor

/// How the elements of a bottleneck tensor are written on the wire.
public enum FrameCodec: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// IEEE float32, 4 bytes per element.
    case float32 = 0
    /// IEEE float16, 2 bytes per element.
    case float16 = 1
    /// Affine uint8: `x ≈ (q − zero) · scale`, 1 byte per element.
    case uint8 = 2
    /// Affine 4-bit, two elements per byte (first element in the low nibble).
    case int4 = 3

    /// Bytes needed for `count` elements before compression.
    public func rawBytes(count: Int) -> Int {
        switch self {
        case .float32: count * 4
        case .float16: count * 2
        case .uint8: count
        case .int4: (count + 1) / 2
        }
    }

    /// Whether frames of this codec carry scale and zero point.
    public var isAffine: Bool { self == .uint8 || self == .int4 }

    /// Largest quantized value (255 or 15) for affine codecs.
    var levels: Int { self == .int4 ? 15 : 255 }

    public var description: String {
        switch self {
        case .float32: "float32"
        case .float16: "float16"
        case .uint8: "uint8"
        case .int4: "int4"
        }
    }
}

/// Which model and split a frame belongs to, when it is not implied by the device's assignment.
public struct FrameContext: Sendable, Equatable {
    /// First 8 bytes of the SHA-256 of the head model.
    public let modelDigest: [UInt8]
    /// Index of the split point within the assignment.
    public let splitID: UInt8

    /// A context; `modelDigest` must have 8 bytes.
    public init(modelDigest: [UInt8], splitID: UInt8) {
        precondition(modelDigest.count == 8, "model digest prefix must be 8 bytes")
        self.modelDigest = modelDigest
        self.splitID = splitID
    }
}

/// Where a frame's part lies in the whole tensor, when a request's tensor is sent in parts
/// (one per patch of a patch-by-patch head, sent as each is computed): rows and columns of
/// the spatial axes 2 and 3 of an NCHW tensor, and how many parts the request has.
public struct FrameRegion: Sendable, Hashable, CustomStringConvertible {
    public var top: Int
    public var left: Int
    public var height: Int
    public var width: Int
    /// Parts of the request in all (at least 1); the receiver has the tensor once it holds
    /// this many parts covering every position once.
    public var parts: Int

    public init(top: Int, left: Int, height: Int, width: Int, parts: Int) {
        self.top = top
        self.left = left
        self.height = height
        self.width = width
        self.parts = parts
    }

    public var description: String { "rows \(top)..<\(top + height), columns \(left)..<\(left + width) (one of \(parts) parts)" }
}

/// Encoder settings for ``BottleneckCodec/encode(_:requestID:options:)``.
public struct FrameOptions: Sendable, Equatable {
    /// Element encoding.
    public var codec: FrameCodec
    /// zstd level (1–19), or `nil` for no compression; even with a level, a payload that zstd
    /// would not shrink is sent raw.
    public var zstdLevel: Int?
    /// One scale and zero point per channel (axis 1, or 0 for vectors) instead of per tensor.
    public var perChannel: Bool
    /// Write the shape into the frame (off when the assignment implies it).
    public var includeShape: Bool
    /// Write model digest and split id (off when the assignment implies them).
    public var context: FrameContext?
    /// The tensor is this part of the request's whole tensor (rank 4; its height and width
    /// are the region's). The whole tensor's shape is then implied by the assignment:
    /// `includeShape` must be off.
    public var region: FrameRegion?

    /// Options; the defaults give the compact common-case header.
    public init(
        codec: FrameCodec = .uint8, zstdLevel: Int? = 3, perChannel: Bool = false, includeShape: Bool = false, context: FrameContext? = nil,
        region: FrameRegion? = nil
    ) {
        self.codec = codec
        self.zstdLevel = zstdLevel
        self.perChannel = perChannel
        self.includeShape = includeShape
        self.context = context
        self.region = region
    }
}

/// Sanity limits the decoder checks before allocating anything.
public struct FrameLimits: Sendable {
    /// Largest payload accepted, in bytes.
    public var maximumPayloadBytes: Int
    /// Largest element count accepted.
    public var maximumElements: Int
    /// Largest rank accepted.
    public var maximumRank: Int

    /// Limits; the defaults suit bottleneck features and offloaded images (16 MiB, 4 M elements).
    public init(maximumPayloadBytes: Int = 16 << 20, maximumElements: Int = 4 << 20, maximumRank: Int = 8) {
        self.maximumPayloadBytes = maximumPayloadBytes
        self.maximumElements = maximumElements
        self.maximumRank = maximumRank
    }
}

/// A decoded frame: its header fields and the dequantized float32 tensor.
public struct DecodedFrame: Sendable {
    /// The request this frame belongs to.
    public let requestID: UInt64
    /// How it was encoded.
    public let codec: FrameCodec
    /// Whether the payload was zstd-compressed.
    public let compressed: Bool
    /// Model and split, when the frame carried them.
    public let context: FrameContext?
    /// Where ``tensor`` lies in the whole tensor, for a frame that carries one part of it.
    public let region: FrameRegion?
    /// The features as float32 (for a part: the whole shape with the region's height and width).
    public let tensor: Tensor
    /// Size of the whole frame, in bytes.
    public let byteCount: Int
}

extension FrameCodec {
    /// The codec with this name (`float32`, `float16`, `uint8`, `int4`).
    public init?(named name: String) {
        guard let match = FrameCodec.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }
}
