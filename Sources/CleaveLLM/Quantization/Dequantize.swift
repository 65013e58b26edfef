/// Turns ggml blocks back into float32, one layout per type.
///
/// The layouts (ggml's, so that GGUF files from llama.cpp load as they are):
/// - `Q8_0`: f16 scale `d`, 32 × int8 `q`; x = d·q.
/// - `Q4_0`: f16 `d`, 16 bytes of nibbles; element j < 16 is the low nibble of byte j,
///   element j + 16 the high nibble; x = d·(q − 8).
/// - `Q4_1`: f16 `d`, f16 `m`, nibbles as Q4_0; x = d·q + m.
/// - `Q4_K`: 256 elements; f16 `d`, f16 `dmin`, 12 bytes holding eight 6-bit scales and
///   eight 6-bit mins, 128 bytes of nibbles. Each 64 elements use two sub-blocks: the low
///   nibbles of 32 bytes with sub-block 2i, their high nibbles with 2i + 1;
///   x = d·scale·q − dmin·min.
/// - `Q6_K`: 256 elements; 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8
///   scales, f16 `d`; x = d·scale·(q − 32), one scale per 16 elements.
enum Dequantize {
    static func supports(_ type: GGMLType) -> Bool { GGMLType.computable.contains(type) }

    /// Dequantizes `count` consecutive elements (a whole number of blocks) starting at `source`.
    static func row(_ type: GGMLType, from source: UnsafeRawPointer, count: Int, into y: UnsafeMutablePointer<Float>) {
        let blocks = count / type.blockSize
        switch type {
        case .f32:
            y.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            for i in 0..<count { y[i] = half(source, 2 * i) }
        case .bf16:
            for i in 0..<count { y[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
        case .q8_0:
            for b in 0..<blocks { q8_0(source + b * 34, y + b * 32) }
        case .q4_0:
            for b in 0..<blocks { q4_0(source + b * 18, y + b * 32) }
        case .q4_1:
            for b in 0..<blocks { q4_1(source + b * 20, y + b * 32) }
        case .q4_K:
            for b in 0..<blocks { q4_K(source + b * 144, y + b * 256) }
        case .q6_K:
            for b in 0..<blocks { q6_K(source + b * 210, y + b * 256) }
        default:
            preconditionFailure("dequantize \(type): check supports(_:) first")
        }
    }

    @inline(__always)
    static func half(_ pointer: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: pointer.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    // MARK: - Block layouts

    static func q8_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let q = (block + 2).assumingMemoryBound(to: Int8.self)
        for j in 0..<32 { y[j] = d * Float(q[j]) }
    }

    static func q4_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let q = (block + 2).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            y[j] = d * Float(Int(q[j] & 0x0F) - 8)
            y[j + 16] = d * Float(Int(q[j] >> 4) - 8)
        }
    }

    static func q4_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let m = half(block, 2)
        let q = (block + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            y[j] = d * Float(q[j] & 0x0F) + m
            y[j + 16] = d * Float(q[j] >> 4) + m
        }
    }

    /// Scale and min of sub-block `j` (0..<8) from the 12 packed bytes of a Q4_K block.
    ///
    /// Sub-blocks 0–3 keep their 6 bits in the low bits of bytes j (scale) and j + 4 (min);
    /// sub-blocks 4–7 keep 4 low bits in byte j + 4 (scale low, min high nibble) and their 2
    /// high bits in the top bits of bytes j − 4 (scale) and j (min).
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ s: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (s[j] & 63, s[j + 4] & 63) }
        return ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }

    static func q4_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let dmin = half(block, 2)
        let scales = (block + 4).assumingMemoryBound(to: UInt8.self)
        let q = (block + 16).assumingMemoryBound(to: UInt8.self)
        for pair in 0..<4 {
            let (s1, m1) = scaleMinK4(2 * pair, scales)
            let (s2, m2) = scaleMinK4(2 * pair + 1, scales)
            let (d1, o1, d2, o2) = (d * Float(s1), dmin * Float(m1), d * Float(s2), dmin * Float(m2))
            let bytes = q + 32 * pair
            let out = y + 64 * pair
            for l in 0..<32 {
                out[l] = d1 * Float(bytes[l] & 0x0F) - o1
                out[l + 32] = d2 * Float(bytes[l] >> 4) - o2
            }
        }
    }

    static func q6_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let low = block.assumingMemoryBound(to: UInt8.self)
        let high = (block + 128).assumingMemoryBound(to: UInt8.self)
        let scales = (block + 192).assumingMemoryBound(to: Int8.self)
        let d = half(block, 208)
        for half in 0..<2 {
            let ql = low + 64 * half
            let qh = high + 32 * half
            let sc = scales + 8 * half
            let out = y + 128 * half
            for l in 0..<32 {
                let group = l / 16
                let q1 = Int(ql[l] & 0x0F) | Int((qh[l] >> 0) & 3) << 4
                let q2 = Int(ql[l + 32] & 0x0F) | Int((qh[l] >> 2) & 3) << 4
                let q3 = Int(ql[l] >> 4) | Int((qh[l] >> 4) & 3) << 4
                let q4 = Int(ql[l + 32] >> 4) | Int((qh[l] >> 6) & 3) << 4
                out[l] = d * Float(sc[group]) * Float(q1 - 32)
                out[l + 32] = d * Float(sc[group + 2]) * Float(q2 - 32)
                out[l + 64] = d * Float(sc[group + 4]) * Float(q3 - 32)
                out[l + 96] = d * Float(sc[group + 6]) * Float(q4 - 32)
            }
        }
    }
}
