/// Packs float32 values into ggml blocks (the inverse of ``Dequantize``).
///
/// Used to write GGUF files (tests make tiny random models with it) and to check the
/// dequantizers. Every scale is rounded *up* to float16 and every 6- or 8-bit sub-scale
/// rounded up, so that each block's range is always covered and the error of an element
/// stays within half a quantization step (plus float16 rounding of the offset for Q4_1).
/// llama.cpp searches scales for a lower mean error; ours are simpler and bounded.
public enum Quantize {
    /// Whether ``blocks(_:values:)`` can write this type.
    public static func supports(_ type: GGMLType) -> Bool { GGMLType.computable.contains(type) }

    /// The ggml encoding of `values` (a whole number of blocks of `type`).
    public static func blocks(_ type: GGMLType, values: [Float]) -> [UInt8] {
        precondition(supports(type) && values.count % type.blockSize == 0, "\(values.count) values as \(type)")
        var out: [UInt8] = []
        out.reserveCapacity(values.count / type.blockSize * type.blockBytes)
        values.withUnsafeBufferPointer { x in
            for start in stride(from: 0, to: values.count, by: type.blockSize) {
                let block = UnsafeBufferPointer(rebasing: x[start..<(start + type.blockSize)])
                switch type {
                case .f32: for v in block { append(&out, v.bitPattern) }
                case .f16: for v in block { append(&out, Float16(v).bitPattern) }
                case .bf16: for v in block { append(&out, bf16(v)) }
                case .q8_0: q8_0(block, &out)
                case .q4_0: q4_0(block, &out)
                case .q4_1: q4_1(block, &out)
                case .q4_K: q4_K(block, &out)
                case .q6_K: q6_K(block, &out)
                default: preconditionFailure("quantize \(type)")
                }
            }
        }
        return out
    }

    // MARK: - Helpers

    static func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    /// The smallest float16 ≥ `value` (for `value` ≥ 0).
    static func halfUp(_ value: Float) -> Float16 {
        var h = Float16(value)
        if Float(h) < value { h = h.nextUp }
        return h
    }

    /// Rounds to nearest even on the dropped 16 bits.
    static func bf16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        return UInt16((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
    }

    static func amax(_ x: UnsafeBufferPointer<Float>) -> Float { x.reduce(0) { max($0, abs($1)) } }

    // MARK: - Block encoders

    static func q8_0(_ x: UnsafeBufferPointer<Float>, _ out: inout [UInt8]) {
        let d = halfUp(amax(x) / 127)
        let inverse = d > 0 ? 1 / Float(d) : 0
        append(&out, d.bitPattern)
        for v in x { out.append(UInt8(bitPattern: Int8(max(-127, min(127, (v * inverse).rounded()))))) }
    }

    static func q4_0(_ x: UnsafeBufferPointer<Float>, _ out: inout [UInt8]) {
        // q − 8 spans −8…7: scale so that the largest magnitude maps to ±7.
        let d = halfUp(amax(x) / 7)
        let inverse = d > 0 ? 1 / Float(d) : 0
        append(&out, d.bitPattern)
        let q = x.map { UInt8(max(0, min(15, ($0 * inverse).rounded() + 8))) }
        for j in 0..<16 { out.append(q[j] | q[j + 16] << 4) }
    }

    static func q4_1(_ x: UnsafeBufferPointer<Float>, _ out: inout [UInt8]) {
        let low = x.min() ?? 0
        var m = Float16(low)
        if Float(m) > low { m = m.nextDown }
        let d = halfUp(max(0, (x.max() ?? 0) - Float(m)) / 15)
        let inverse = d > 0 ? 1 / Float(d) : 0
        append(&out, d.bitPattern)
        append(&out, m.bitPattern)
        let q = x.map { UInt8(max(0, min(15, (($0 - Float(m)) * inverse).rounded()))) }
        for j in 0..<16 { out.append(q[j] | q[j + 16] << 4) }
    }

    static func q4_K(_ x: UnsafeBufferPointer<Float>, _ out: inout [UInt8]) {
        // Eight sub-blocks of 32: x ≈ d·scale·q − dmin·min with q in 0…15, scale and min in 0…63.
        let subMins = (0..<8).map { j in max(0, -(x[(32 * j)..<(32 * j + 32)].min() ?? 0)) }
        let dmin = halfUp((subMins.max() ?? 0) / 63)
        let mins = subMins.map { dmin > 0 ? UInt8(min(63, ($0 / Float(dmin)).rounded(.up))) : 0 }
        let needed = (0..<8).map { j in ((x[(32 * j)..<(32 * j + 32)].max() ?? 0) + Float(dmin) * Float(mins[j])) / 15 }
        let d = halfUp((needed.max() ?? 0) / 63)
        let scales = needed.map { d > 0 ? UInt8(min(63, ($0 / Float(d)).rounded(.up))) : 0 }
        append(&out, d.bitPattern)
        append(&out, dmin.bitPattern)
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            packed[j] = scales[j] | (scales[j + 4] >> 4) << 6
            packed[j + 4] = mins[j] | (mins[j + 4] >> 4) << 6
            packed[j + 8] = (scales[j + 4] & 0x0F) | (mins[j + 4] & 0x0F) << 4
        }
        out.append(contentsOf: packed)
        var q = [UInt8](repeating: 0, count: 256)
        for j in 0..<8 {
            let step = Float(d) * Float(scales[j])
            let offset = Float(dmin) * Float(mins[j])
            for l in 0..<32 {
                q[32 * j + l] = step > 0 ? UInt8(max(0, min(15, ((x[32 * j + l] + offset) / step).rounded()))) : 0
            }
        }
        for pair in 0..<4 {
            for l in 0..<32 { out.append(q[64 * pair + l] | q[64 * pair + 32 + l] << 4) }
        }
    }

    static func q6_K(_ x: UnsafeBufferPointer<Float>, _ out: inout [UInt8]) {
        // Sixteen sub-blocks of 16: x ≈ d·scale·(q − 32) with q − 32 in −32…31, scale in −127…127.
        let needed = (0..<16).map { j in (x[(16 * j)..<(16 * j + 16)].map(abs).max() ?? 0) / 31 }
        let d = halfUp((needed.max() ?? 0) / 127)
        let scales = needed.map { d > 0 ? Int8(min(127, ($0 / Float(d)).rounded(.up))) : 0 }
        var q = [Int](repeating: 32, count: 256)
        for j in 0..<16 {
            let step = Float(d) * Float(scales[j])
            for l in 0..<16 where step > 0 {
                q[16 * j + l] = Int(max(-32, min(31, (x[16 * j + l] / step).rounded()))) + 32
            }
        }
        var low = [UInt8](repeating: 0, count: 128)
        var high = [UInt8](repeating: 0, count: 64)
        for half in 0..<2 {
            for l in 0..<32 {
                let base = 128 * half
                let (q1, q2, q3, q4) = (q[base + l], q[base + l + 32], q[base + l + 64], q[base + l + 96])
                low[64 * half + l] = UInt8(q1 & 0x0F) | UInt8(q3 & 0x0F) << 4
                low[64 * half + l + 32] = UInt8(q2 & 0x0F) | UInt8(q4 & 0x0F) << 4
                high[32 * half + l] = UInt8(q1 >> 4) | UInt8(q2 >> 4) << 2 | UInt8(q3 >> 4) << 4 | UInt8(q4 >> 4) << 6
            }
        }
        out.append(contentsOf: low)
        out.append(contentsOf: high)
        for s in scales { out.append(UInt8(bitPattern: s)) }
        append(&out, d.bitPattern)
    }
}
