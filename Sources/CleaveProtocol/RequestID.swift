/// Request ids travel as MQTT v5 correlation data: 8 bytes, little-endian.
public enum RequestID {
    public static func encode(_ id: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: id >> UInt64(8 * $0)) } }

    /// The id in `bytes`, or nil unless they are exactly 8 bytes.
    public static func decode(_ bytes: [UInt8]?) -> UInt64? {
        guard let bytes, bytes.count == 8 else { return nil }
        return bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64(8 * $1.offset) }
    }
}
