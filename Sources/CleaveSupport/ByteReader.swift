/// Why a ``ByteReader`` stopped: the input ended early, or a varint was malformed.
public enum ByteReadError: Error, Sendable, Equatable {
    /// `needed` bytes were asked for at `offset` (from the start of the input), with the
    /// readable part ending at `end`.
    case truncated(offset: Int, needed: Int, end: Int)
    /// A LEB128 varint longer than ten bytes, over 64 bits, or encoded with a redundant zero byte.
    case badVarint(offset: Int)
}

/// A bounds-checked little-endian reader over bytes in memory: frames, GGUF headers, model
/// files. Every read checks the length first and throws ``ByteReadError``; callers turn that
/// into their own domain's error with the field's name.
///
/// `Bytes` is any random-access collection of bytes indexed by `Int` from zero (an array, or
/// the raw buffer of a mapped file), so one reader serves both.
public struct ByteReader<Bytes: RandomAccessCollection> where Bytes.Element == UInt8, Bytes.Index == Int {
    public let bytes: Bytes
    /// The next byte to read, counted from the start of `bytes` (settable: a reader may seek).
    public var offset: Int
    /// Where reading must stop (a trailing checksum starts there).
    public let end: Int

    /// A reader of `bytes` up to `end` (default: all of them).
    @inlinable
    public init(_ bytes: Bytes, end: Int? = nil) {
        self.bytes = bytes
        offset = bytes.startIndex
        self.end = min(end ?? bytes.endIndex, bytes.endIndex)
    }

    /// Bytes left before ``end``.
    @inlinable public var remaining: Int { end - offset }

    /// Throws unless `count` more bytes can be read.
    @inlinable
    public func need(_ count: Int) throws(ByteReadError) {
        guard count >= 0, count <= end - offset else { throw .truncated(offset: offset, needed: count, end: end) }
    }

    /// A little-endian integer of `T`'s width.
    @inlinable
    public mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) throws(ByteReadError) -> T {
        let size = MemoryLayout<T>.size
        try need(size)
        var value: T = 0
        for index in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index) }
        offset += size
        return value
    }

    /// A little-endian IEEE-754 single.
    @inlinable
    public mutating func float32() throws(ByteReadError) -> Float { Float(bitPattern: try integer(UInt32.self)) }

    /// A little-endian IEEE-754 double.
    @inlinable
    public mutating func float64() throws(ByteReadError) -> Double { Double(bitPattern: try integer(UInt64.self)) }

    /// The next `count` bytes, without copying.
    @inlinable
    public mutating func take(_ count: Int) throws(ByteReadError) -> Bytes.SubSequence {
        try need(count)
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    /// Skips `count` bytes.
    @inlinable
    public mutating func skip(_ count: Int) throws(ByteReadError) {
        try need(count)
        offset += count
    }

    /// An unsigned LEB128 varint (7 bits per byte, high bit set on every byte but the last),
    /// refusing over-long and over-wide encodings so that each value has one encoding.
    @inlinable
    public mutating func varint() throws(ByteReadError) -> UInt64 {
        let start = offset
        var value: UInt64 = 0
        for index in 0..<10 {
            let byte = try integer(UInt8.self)
            if index == 9 && byte > 1 { throw .badVarint(offset: start) }
            value |= UInt64(byte & 0x7F) << UInt64(7 * index)
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 { throw .badVarint(offset: start) }
                return value
            }
        }
        throw .badVarint(offset: start)
    }
}

extension ByteReader: Sendable where Bytes: Sendable {}

/// Appends little-endian fields to a byte buffer.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8]

    /// An empty buffer with room for `capacity` bytes.
    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// A little-endian integer of `T`'s width.
    @inlinable
    public mutating func integer<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    public mutating func u8(_ value: UInt8) { bytes.append(value) }

    public mutating func float32(_ value: Float) { integer(value.bitPattern) }

    public mutating func float64(_ value: Double) { integer(value.bitPattern) }

    /// Unsigned LEB128: 7 bits per byte, high bit set on every byte but the last.
    public mutating func varint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    public mutating func append(_ byte: UInt8) { bytes.append(byte) }

    public mutating func append(contentsOf other: some Sequence<UInt8>) { bytes.append(contentsOf: other) }

    /// Overwrites bytes from `offset` (a length field written after its body).
    public mutating func replace(at offset: Int, with other: [UInt8]) {
        bytes.replaceSubrange(offset..<(offset + other.count), with: other)
    }
}
