import CZstd

/// zstd compression of frame payloads; the only code that touches libzstd.
enum Zstd {
    /// `bytes` compressed at `level` (1–19).
    static func compress(_ bytes: [UInt8], level: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let written = output.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                ZSTD_compress(destination.baseAddress, destination.count, source.baseAddress, source.count, Int32(level))
            }
        }
        precondition(ZSTD_isError(written) == 0, "zstd compression failed with a bound-sized buffer")
        output.removeLast(output.count - written)
        return output
    }

    /// Decompresses `bytes`, which must expand to exactly `expectedSize` bytes.
    static func decompress(_ bytes: ArraySlice<UInt8>, expectedSize: Int) throws(FrameError) -> [UInt8] {
        let declared = bytes.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        // ZSTD_CONTENTSIZE_UNKNOWN is 0ULL - 1 and ZSTD_CONTENTSIZE_ERROR is 0ULL - 2.
        guard declared != UInt64.max - 1 else { throw .compression("payload is not a zstd frame") }
        guard declared == UInt64.max || declared == UInt64(expectedSize) else {
            throw .compression("zstd frame expands to \(declared) bytes, the shape needs \(expectedSize)")
        }
        var output = [UInt8](repeating: 0, count: expectedSize)
        let written = output.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                ZSTD_decompress(destination.baseAddress, destination.count, source.baseAddress, source.count)
            }
        }
        guard ZSTD_isError(written) == 0 else {
            throw .compression("zstd: \(String(cString: ZSTD_getErrorName(written)))")
        }
        guard written == expectedSize else {
            throw .compression("zstd payload expands to \(written) bytes, the shape needs \(expectedSize)")
        }
        return output
    }
}
