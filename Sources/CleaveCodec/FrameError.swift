/// Why a feature frame was rejected. The decoder never traps; every malformed
/// input ends in one of these, with the offending value in the message.
public enum FrameError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(needed: Int, available: Int)
    case badMagic(UInt8)
    case unsupportedVersion(Int)
    case unknownCodec(Int)
    case reservedFlags(UInt8)
    case badVarint(field: String)
    case limitExceeded(field: String, value: Int, limit: Int)
    case shapeUnknown
    case shapeMismatch(expected: [Int], got: [Int])
    case invalidParameters(String)
    case lengthMismatch(payload: Int, expected: Int)
    case compression(String)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case trailingBytes(Int)
    case invalidRegion(String)

    public var description: String {
        switch self {
        case .truncated(let needed, let available): "frame truncated: needs \(needed) bytes, has \(available)"
        case .badMagic(let byte): "not a feature frame: magic byte is 0x\(String(byte, radix: 16)), expected 0xc7"
        case .unsupportedVersion(let version): "unsupported frame version \(version) (this build reads version 1)"
        case .unknownCodec(let codec): "unknown codec \(codec)"
        case .reservedFlags(let flags): "reserved flag bits set: 0x\(String(flags, radix: 16))"
        case .badVarint(let field): "malformed variable-length integer in \(field)"
        case .limitExceeded(let field, let value, let limit): "\(field) is \(value), the limit is \(limit)"
        case .shapeUnknown: "the frame carries no shape and none is assigned"
        case .shapeMismatch(let expected, let got): "frame shape \(got) differs from the assigned \(expected)"
        case .invalidParameters(let reason): "invalid quantization parameters: \(reason)"
        case .lengthMismatch(let payload, let expected): "payload has \(payload) bytes, the shape and codec need \(expected)"
        case .compression(let reason): "bad compressed payload: \(reason)"
        case .checksumMismatch(let stored, let computed):
            "CRC-32C mismatch: frame says 0x\(String(stored, radix: 16)), bytes give 0x\(String(computed, radix: 16))"
        case .trailingBytes(let count): "\(count) unexpected bytes after the checksum"
        case .invalidRegion(let reason): "invalid part region: \(reason)"
        }
    }
}
