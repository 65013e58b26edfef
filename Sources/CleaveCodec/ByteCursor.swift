/// Appends little-endian fields to a byte buffer.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }

    mutating func u32(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func f32(_ value: Float) { u32(value.bitPattern) }

    /// Unsigned LEB128: 7 bits per byte, high bit set on every byte but the last.
    mutating func varint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }
}

/// Reads little-endian fields from a byte buffer, checking every length first.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0
    /// Where reading must stop (the checksum starts there).
    let end: Int

    init(_ bytes: [UInt8], end: Int) {
        self.bytes = bytes
        self.end = end
    }

    mutating func need(_ count: Int) throws(FrameError) {
        guard count >= 0, count <= end - position else { throw .truncated(needed: position + count + 4, available: bytes.count) }
    }

    mutating func u8() throws(FrameError) -> UInt8 {
        try need(1)
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32() throws(FrameError) -> UInt32 {
        try need(4)
        defer { position += 4 }
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[position + $1]) << UInt32(8 * $1) }
    }

    mutating func f32() throws(FrameError) -> Float { Float(bitPattern: try u32()) }

    mutating func varint(_ field: String) throws(FrameError) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<10 {
            let byte = try u8()
            let payload = UInt64(byte & 0x7F)
            if index == 9 && byte > 1 { throw .badVarint(field: field) }
            value |= payload << UInt64(7 * index)
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 { throw .badVarint(field: field) }  // over-long encoding
                return value
            }
        }
        throw .badVarint(field: field)
    }

    /// A varint that must be at most `limit`.
    mutating func bounded(_ field: String, limit: Int) throws(FrameError) -> Int {
        let value = try varint(field)
        guard value <= UInt64(limit) else { throw .limitExceeded(field: field, value: Int(clamping: value), limit: limit) }
        return Int(value)
    }

    mutating func take(_ count: Int) throws(FrameError) -> ArraySlice<UInt8> {
        try need(count)
        defer { position += count }
        return bytes[position..<(position + count)]
    }
}
