/// Fused dequantize-and-dot kernels: one weight row (ggml blocks, read in place
/// from the mapped file) times one or four quantized activation rows.
///
/// The integer part of a block is 16-bit multiplies of unpacked weights with the
/// even/odd activation lanes (see ``Activations``); pairs of lanes are then summed
/// into 32-bit integers, converted to float and scaled by `d_w · d_a` into an
/// eight-lane accumulator, reduced once per row. Only Swift `SIMD` types are used,
/// so the same code compiles to AVX2 on x86 and NEON on aarch64.
enum QuantizedDot {
    /// Weight types with an integer kernel; other types go through ``dequantizedDot``.
    static func hasIntegerKernel(_ type: GGMLType) -> Bool { [.q4_0, .q4_1, .q8_0, .q4_K, .q6_K].contains(type) }

    /// Weight row `row` times the activations of `tokens` consecutive tokens from `first`;
    /// writes `out[t * stride]` for each token.
    @inline(__always)
    static func row(
        _ type: GGMLType, _ row: UnsafeRawPointer, _ x: Activations, first: Int, tokens: Int,
        _ out: UnsafeMutablePointer<Float>, stride: Int
    ) {
        let blocks = x.blocksPerToken
        var t = 0
        if type == .q4_K || type == .q6_K {
            for t in 0..<tokens {
                let a = Operand(x, first + t)
                out[t * stride] = type == .q4_K ? q4_KOne(row, a, blocks / 8) : q6_KOne(row, a, blocks / 8)
            }
            return
        }
        while t + 4 <= tokens {
            let a = Operand(x, first + t)
            switch type {
            case .q4_1: q4Four(row, a, blocks, out + t * stride, stride, withMin: true)
            case .q4_0: q4Four(row, a, blocks, out + t * stride, stride, withMin: false)
            default: q8_0Four(row, a, blocks, out + t * stride, stride)
            }
            t += 4
        }
        while t < tokens {
            let a = Operand(x, first + t)
            switch type {
            case .q4_1: out[t * stride] = q4One(row, a, blocks, withMin: true)
            case .q4_0: out[t * stride] = q4One(row, a, blocks, withMin: false)
            default: out[t * stride] = q8_0One(row, a, blocks)
            }
            t += 1
        }
    }

    /// The quantized activations of one token as raw pointers, so that the loops below keep
    /// everything in registers (reading through the class would reload its fields).
    struct Operand {
        let quants: UnsafePointer<Int16>
        let scales: UnsafePointer<Float>
        let sums: UnsafePointer<Float>
        let integerSums: UnsafePointer<Float>
        let tokenStride: Int
        let blockStride: Int

        @inline(__always)
        init(_ x: Activations, _ token: Int) {
            quants = UnsafePointer(x.quants + token * x.columns)
            scales = UnsafePointer(x.scales + token * x.blocksPerToken)
            sums = UnsafePointer(x.sums + token * x.blocksPerToken)
            integerSums = UnsafePointer(x.integerSums + token * x.blocksPerToken)
            tokenStride = x.columns
            blockStride = x.blocksPerToken
        }

        /// Even and odd lanes of block `b` of the token `offset` after this one.
        @inline(__always)
        func lanes(_ b: Int, token offset: Int = 0) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>) {
            let a = UnsafeRawPointer(quants + (offset &* tokenStride &+ 32 &* b))
            return (a.loadUnaligned(as: SIMD16<Int16>.self), a.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self))
        }

        @inline(__always)
        func scale(_ b: Int, token offset: Int = 0) -> Float { scales[offset &* blockStride &+ b] }

        @inline(__always)
        func sum(_ b: Int, token offset: Int = 0) -> Float { sums[offset &* blockStride &+ b] }
    }

    // MARK: - Lane helpers

    /// Sums adjacent 16-bit lanes into 32-bit integers and converts them to float: lane i
    /// then holds the products of elements 4i…4i + 3 (the grouping of ggml's AVX2 kernels).
    @inline(__always)
    private static func pairSums(_ p: SIMD16<Int16>) -> SIMD8<Float> {
        let w = unsafeBitCast(p, to: SIMD8<Int32>.self)
        return SIMD8<Float>(((w &<< 16) &>> 16) &+ (w &>> 16))
    }

    /// Sum of eight lanes in the order of ggml's `hsum_float_8` (halves, then pairs), so
    /// that a row's result rounds as llama.cpp's does.
    /// `pairSums` for lanes whose adjacent sums fit in 16 bits (Q4 products: |p| ≤ 2·15·128):
    /// the high half of `w + (w << 16)` is that sum, one shift cheaper.
    @inline(__always)
    private static func smallPairSums(_ p: SIMD16<Int16>) -> SIMD8<Float> {
        let w = unsafeBitCast(p, to: SIMD8<Int32>.self)
        return SIMD8<Float>((w &+ (w &<< 16)) &>> 16)
    }

    @inline(__always)
    static func horizontalSum(_ v: SIMD8<Float>) -> Float {
        let four = v.lowHalf + v.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    @inline(__always)
    private static func half(_ pointer: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: pointer.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    /// The 32 nibbles of a Q4 block minus `offset`, as even and odd lanes (element 2i and
    /// 2i + 1 in lane i).
    @inline(__always)
    private static func nibbles(_ quants: UnsafeRawPointer, offset: Int16) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>) {
        let w = quants.loadUnaligned(as: SIMD8<Int16>.self)
        let t = SIMD16<Int16>(lowHalf: w, highHalf: w &>> 4)
        let mask = SIMD16<Int16>(repeating: 0x0F)
        let shift = SIMD16<Int16>(repeating: offset)
        return ((t & mask) &- shift, ((t &>> 8) & mask) &- shift)
    }

    /// The 32 int8 of a Q8_0 block as even and odd lanes.
    @inline(__always)
    private static func bytes(_ quants: UnsafeRawPointer) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>) {
        let w = quants.loadUnaligned(as: SIMD16<Int16>.self)
        return ((w &<< 8) &>> 8, w &>> 8)
    }

    // MARK: - Q4_0 and Q4_1 (x = d·q + m, or d·(q − 8))

    /// Q4_1: Σ d_w·d_a·Σ(q_w·q_a) + Σ m_w·s_a. Q4_0: Σ d_w·d_a·Σ((q_w − 8)·q_a), the
    /// offset applied to the nibbles so that the integer sum is exact.
    @inline(__always)
    private static func q4One(_ row: UnsafeRawPointer, _ a: Operand, _ blocks: Int, withMin: Bool) -> Float {
        let blockBytes = withMin ? 20 : 18
        var accumulator = SIMD8<Float>(repeating: 0)
        var offsets: Float = 0
        for b in 0..<blocks {
            let block = row + blockBytes &* b
            let (we, wo) = nibbles(block + (withMin ? 4 : 2), offset: withMin ? 0 : 8)
            let (ae, ao) = a.lanes(b)
            if withMin {
                let dm = SIMD2<Float>(block.loadUnaligned(as: SIMD2<Float16>.self))
                accumulator.addProduct(smallPairSums(we &* ae &+ wo &* ao), SIMD8(repeating: dm[0] * a.scale(b)))
                offsets.addProduct(dm[1], a.sum(b))
            } else {
                accumulator.addProduct(smallPairSums(we &* ae &+ wo &* ao), SIMD8(repeating: half(block, 0) * a.scale(b)))
            }
        }
        return horizontalSum(accumulator) + offsets
    }

    @inline(__always)
    private static func q4Four(
        _ row: UnsafeRawPointer, _ a: Operand, _ blocks: Int, _ out: UnsafeMutablePointer<Float>, _ stride: Int,
        withMin: Bool
    ) {
        let blockBytes = withMin ? 20 : 18
        var a0 = SIMD8<Float>(repeating: 0)
        var a1 = a0
        var a2 = a0
        var a3 = a0
        var offsets = SIMD4<Float>(repeating: 0)
        for b in 0..<blocks {
            let block = row + blockBytes &* b
            let (we, wo) = nibbles(block + (withMin ? 4 : 2), offset: withMin ? 0 : 8)
            let dw = half(block, 0)
            let (e0, o0) = a.lanes(b)
            let (e1, o1) = a.lanes(b, token: 1)
            let (e2, o2) = a.lanes(b, token: 2)
            let (e3, o3) = a.lanes(b, token: 3)
            a0.addProduct(smallPairSums(we &* e0 &+ wo &* o0), SIMD8(repeating: dw * a.scale(b)))
            a1.addProduct(smallPairSums(we &* e1 &+ wo &* o1), SIMD8(repeating: dw * a.scale(b, token: 1)))
            a2.addProduct(smallPairSums(we &* e2 &+ wo &* o2), SIMD8(repeating: dw * a.scale(b, token: 2)))
            a3.addProduct(smallPairSums(we &* e3 &+ wo &* o3), SIMD8(repeating: dw * a.scale(b, token: 3)))
            if withMin {
                let s = SIMD4<Float>(a.sum(b), a.sum(b, token: 1), a.sum(b, token: 2), a.sum(b, token: 3))
                offsets.addProduct(SIMD4(repeating: half(block, 2)), s)
            }
        }
        out[0] = horizontalSum(a0) + offsets[0]
        out[stride] = horizontalSum(a1) + offsets[1]
        out[2 * stride] = horizontalSum(a2) + offsets[2]
        out[3 * stride] = horizontalSum(a3) + offsets[3]
    }

    // MARK: - Q8_0 (x = d·q)

    @inline(__always)
    private static func q8_0One(_ row: UnsafeRawPointer, _ a: Operand, _ blocks: Int) -> Float {
        var accumulator = SIMD8<Float>(repeating: 0)
        for b in 0..<blocks {
            let block = row + 34 &* b
            let (we, wo) = bytes(block + 2)
            let (ae, ao) = a.lanes(b)
            accumulator.addProduct(pairSums(we &* ae &+ wo &* ao), SIMD8(repeating: half(block, 0) * a.scale(b)))
        }
        return horizontalSum(accumulator)
    }

    @inline(__always)
    private static func q8_0Four(
        _ row: UnsafeRawPointer, _ a: Operand, _ blocks: Int, _ out: UnsafeMutablePointer<Float>, _ stride: Int
    ) {
        var a0 = SIMD8<Float>(repeating: 0)
        var a1 = a0
        var a2 = a0
        var a3 = a0
        for b in 0..<blocks {
            let block = row + 34 &* b
            let (we, wo) = bytes(block + 2)
            let dw = half(block, 0)
            let (e0, o0) = a.lanes(b)
            let (e1, o1) = a.lanes(b, token: 1)
            let (e2, o2) = a.lanes(b, token: 2)
            let (e3, o3) = a.lanes(b, token: 3)
            a0.addProduct(pairSums(we &* e0 &+ wo &* o0), SIMD8(repeating: dw * a.scale(b)))
            a1.addProduct(pairSums(we &* e1 &+ wo &* o1), SIMD8(repeating: dw * a.scale(b, token: 1)))
            a2.addProduct(pairSums(we &* e2 &+ wo &* o2), SIMD8(repeating: dw * a.scale(b, token: 2)))
            a3.addProduct(pairSums(we &* e3 &+ wo &* o3), SIMD8(repeating: dw * a.scale(b, token: 3)))
        }
        out[0] = horizontalSum(a0)
        out[stride] = horizontalSum(a1)
        out[2 * stride] = horizontalSum(a2)
        out[3 * stride] = horizontalSum(a3)
    }

    // MARK: - Q4_K and Q6_K (256-element super-blocks; every 32-element sub-block is one activation block)

    /// Q4_K: x = d·scale_j·q − dmin·min_j per sub-block j, so the dot is
    /// Σ_j d·scale_j·d_a·Σ(q·q_a) − dmin·min_j·d_a·Σq_a.
    @inline(__always)
    private static func q4_KOne(_ row: UnsafeRawPointer, _ a: Operand, _ superBlocks: Int) -> Float {
        var accumulator = SIMD8<Float>(repeating: 0)
        var mins: Float = 0
        let mask = SIMD16<Int16>(repeating: 0x0F)
        for s in 0..<superBlocks {
            let block = row + 144 &* s
            let d = half(block, 0)
            let dmin = half(block, 2)
            let scales = (block + 4).assumingMemoryBound(to: UInt8.self)
            for pair in 0..<4 {
                let w = (block + (16 &+ 32 &* pair)).loadUnaligned(as: SIMD16<Int16>.self)
                let (s1, m1) = Dequantize.scaleMinK4(2 * pair, scales)
                let (s2, m2) = Dequantize.scaleMinK4(2 * pair + 1, scales)
                let b1 = 8 &* s &+ 2 &* pair
                let (e1, o1) = a.lanes(b1)
                let (e2, o2) = a.lanes(b1 &+ 1)
                let low = (w & mask) &* e1 &+ ((w &>> 8) & mask) &* o1
                let high = ((w &>> 4) & mask) &* e2 &+ ((w &>> 12) & mask) &* o2
                accumulator.addProduct(smallPairSums(low), SIMD8(repeating: d * Float(s1) * a.scale(b1)))
                accumulator.addProduct(smallPairSums(high), SIMD8(repeating: d * Float(s2) * a.scale(b1 &+ 1)))
                mins.addProduct(dmin * Float(m1) * a.scale(b1), a.integerSums[b1])
                mins.addProduct(dmin * Float(m2) * a.scale(b1 &+ 1), a.integerSums[b1 &+ 1])
            }
        }
        return horizontalSum(accumulator) - mins
    }

    /// Q6_K: x = d·scale_g·(q − 32) with one int8 scale per 16 elements; a 32-element sub-block's
    /// eight pair-sum lanes take two scales (lanes 0–3 the first 16 elements, 4–7 the next).
    @inline(__always)
    private static func q6_KOne(_ row: UnsafeRawPointer, _ a: Operand, _ superBlocks: Int) -> Float {
        var accumulator = SIMD8<Float>(repeating: 0)
        let low4 = SIMD16<Int16>(repeating: 0x0F)
        let two = SIMD16<Int16>(repeating: 3)
        let offset = SIMD16<Int16>(repeating: 32)
        for s in 0..<superBlocks {
            let block = row + 210 &* s
            let d = half(block, 208)
            let scales = (block + 192).assumingMemoryBound(to: Int8.self)
            for part in 0..<2 {
                let lowA = (block + 64 &* part).loadUnaligned(as: SIMD16<Int16>.self)
                let lowB = (block + (64 &* part &+ 32)).loadUnaligned(as: SIMD16<Int16>.self)
                let high = (block + (128 &+ 32 &* part)).loadUnaligned(as: SIMD16<Int16>.self)
                let sc = scales + 8 &* part
                // Sub-block j of this half: low nibbles of A, of B, high nibbles of A, of B; high bits 2j, 2j + 1.
                for j in 0..<4 {
                    let source = j & 1 == 0 ? lowA : lowB
                    let nibbleShift = SIMD16<Int16>(repeating: j < 2 ? 0 : 4)
                    let bitShift = SIMD16<Int16>(repeating: Int16(2 * j))
                    let even = ((source &>> nibbleShift) & low4) | (((high &>> bitShift) & two) &<< 4)
                    let odd = ((source &>> (nibbleShift &+ 8)) & low4) | (((high &>> (bitShift &+ 8)) & two) &<< 4)
                    let b = 8 &* s &+ 4 &* part &+ j
                    let (ae, ao) = a.lanes(b)
                    let p = (even &- offset) &* ae &+ (odd &- offset) &* ao
                    let scale = SIMD8<Float>(
                        lowHalf: SIMD4(repeating: Float(sc[2 * j])), highHalf: SIMD4(repeating: Float(sc[2 * j + 1])))
                    accumulator.addProduct(smallPairSums(p), scale * (d * a.scale(b)))
                }
            }
        }
        return horizontalSum(accumulator)
    }

    // MARK: - Other types: dequantize the row, then a float dot

    /// `row` dequantized into `scratch` (columns floats), times each token's float values.
    static func dequantizedDot(
        _ type: GGMLType, _ row: UnsafeRawPointer, _ x: Activations, first: Int, tokens: Int,
        _ out: UnsafeMutablePointer<Float>, stride: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        Dequantize.row(type, from: row, count: x.columns, into: scratch)
        for t in 0..<tokens {
            out[t * stride] = floatDot(scratch, x.row(first + t), x.columns)
        }
    }

    /// Σ a[i]·b[i] in eight float lanes.
    @inline(__always)
    static func floatDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var accumulator = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            accumulator.addProduct(
                UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self),
                UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
            i += 8
        }
        var total = accumulator.sum()
        while i < count {
            total += a[i] * b[i]
            i += 1
        }
        return total
    }
}
