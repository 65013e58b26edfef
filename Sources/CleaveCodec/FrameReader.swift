import CleaveSupport

/// The frame decoder's reads: ``ByteReader`` (CleaveSupport) over the frame up to its
/// checksum, with every failure turned into the ``FrameError`` that names the field.
struct FrameReader {
    private var reader: ByteReader<[UInt8]>
    /// The whole frame's size, checksum included (what a truncation error reports).
    private let frameBytes: Int

    init(_ bytes: [UInt8], end: Int) {
        reader = ByteReader(bytes, end: end)
        frameBytes = bytes.count
    }

    /// The next byte to read.
    var position: Int { reader.offset }
    /// Where the checksum starts.
    var end: Int { reader.end }

    mutating func u8() throws(FrameError) -> UInt8 {
        do { return try reader.integer(UInt8.self) } catch { throw frameError(error, field: "") }
    }

    mutating func f32() throws(FrameError) -> Float {
        do { return try reader.float32() } catch { throw frameError(error, field: "") }
    }

    mutating func varint(_ field: String) throws(FrameError) -> UInt64 {
        do { return try reader.varint() } catch { throw frameError(error, field: field) }
    }

    /// A varint that must be at most `limit`.
    mutating func bounded(_ field: String, limit: Int) throws(FrameError) -> Int {
        let value = try varint(field)
        guard value <= UInt64(limit) else { throw .limitExceeded(field: field, value: Int(clamping: value), limit: limit) }
        return Int(value)
    }

    mutating func take(_ count: Int) throws(FrameError) -> ArraySlice<UInt8> {
        do { return try reader.take(count) } catch { throw frameError(error, field: "") }
    }

    private func frameError(_ error: ByteReadError, field: String) -> FrameError {
        switch error {
        case .truncated(let offset, let needed, _): .truncated(needed: offset + needed + 4, available: frameBytes)
        case .badVarint: .badVarint(field: field)
        }
    }
}
