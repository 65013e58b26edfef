/// Depthwise convolutions (one filter per channel, `group == channels`): the general direct
/// loop, and for 3×3 windows with stride 1 or 2 (all of MobileNet's) a row-by-row kernel for
/// wide planes and a whole-plane sweep for small ones. The row helpers they share with
/// im2col and pooling (`splitPhases`, `splitWideRow`, `copyShort`) are in `Convolution.swift`.
extension Convolution {
    /// Whether a depthwise convolution may write its output over its input (the memory
    /// planner then gives both one block): one filter per channel and an output plane of the
    /// input plane's size, so that output plane p covers input plane p and nothing else, and
    /// each thread can copy a plane aside before overwriting it.
    public static func depthwiseRunsInPlace(input: [Int], output: [Int], weight: [Int], group: Int) -> Bool {
        input.count >= 3 && input == output && group == input[1] && weight.first == input[1]
    }

    /// A depthwise convolution whose output is its input's memory: each plane is copied to a
    /// buffer of the thread's, then convolved from there into its own place (TinyEngine's
    /// in-place depthwise idea: the expanded tensor and the depthwise output share memory).
    static func depthwiseInPlace(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?, planes: Int, channels: Int,
        inSize: [Int], outSize: [Int], g: WindowGeometry, activation: Activation?, pool: ThreadPool
    ) {
        let planeSize = inSize.reduce(1, *)
        precondition(planeSize == outSize.reduce(1, *), "an in-place depthwise convolution keeps the plane size")
        let serial = ThreadPool(threads: 1)
        let rowKernel =
            g.kernel == [1, 3, 3] && g.dilations == [1, 1, 1] && inSize[0] == 1 && g.padsBegin[0] == 0 && g.strides == [1, 1, 1]
        pool.parallelFor(planes, minimumChunk: max(1, (1 << 16) / max(1, 9 * planeSize))) { range in
            let copy = UnsafeMutablePointer<Float>.allocate(capacity: planeSize)
            defer { copy.deallocate() }
            for plane in range {
                let c = plane % channels
                let target = x + plane * planeSize
                copy.update(from: target, count: planeSize)
                if rowKernel {
                    depthwise3x3(
                        x: copy, w: w + c * 9, b: b.map { $0 + c }, y: target, planes: 1, channels: 1, inSize: inSize, outSize: outSize,
                        top: g.padsBegin[1], left: g.padsBegin[2], stride: 1, activation: activation, pool: serial)
                } else {
                    depthwise(
                        x: copy, w: w + c * g.kernel.reduce(1, *), b: b.map { $0 + c }, y: target, batch: 1, channels: 1, inSize: inSize,
                        outSize: outSize, g: g, activation: activation, pool: serial)
                }
            }
        }
    }

    /// One filter per channel: each output channel reads only its own input channel.
    ///
    /// Each plane is copied once into a zero-padded scratch plane whose rows are split into
    /// `stride` phases (columns 0, s, 2s, … then 1, 1+s, …), so that for any stride the
    /// inner loop over output columns reads consecutive floats with no bounds checks and
    /// vectorizes. 3×3 filters (most of MobileNet) add all nine taps in one pass over a row.
    static func depthwise(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, activation: Activation?, pool: ThreadPool
    ) {
        let (inD, inH, inW) = (inSize[0], inSize[1], inSize[2])
        let (outD, outH, outW) = (outSize[0], outSize[1], outSize[2])
        let (kD, kH, kW) = (g.kernel[0], g.kernel[1], g.kernel[2])
        let taps = kD * kH * kW
        // Padded extents large enough for every window the output reads.
        let padD = max(inD + g.padsBegin[0], (outD - 1) * g.strides[0] + (kD - 1) * g.dilations[0] + 1)
        let padH = max(inH + g.padsBegin[1], (outH - 1) * g.strides[1] + (kH - 1) * g.dilations[1] + 1)
        let padW = max(inW + g.padsBegin[2], (outW - 1) * g.strides[2] + (kW - 1) * g.dilations[2] + 1)
        let (sD, sH, sW) = (g.strides[0], g.strides[1], g.strides[2])
        let (dD, dH, dW) = (g.dilations[0], g.dilations[1], g.dilations[2])
        // A padded row is stored as `sW` phases of `phaseW` columns: padded column p sits in phase
        // p % sW at index p / sW, so output column x with tap offset t reads phase t % sW at x + t / sW.
        let phaseW = (padW + sW - 1) / sW
        let rowStride = sW * phaseW
        let planeSize = padD * padH * rowStride
        let threeByThree = kD == 1 && kH == 3 && kW == 3
        pool.parallelFor(batch * channels) { range in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: planeSize)
            defer { scratch.deallocate() }
            for plane in range {
                let c = plane % channels
                let source = x + plane * inD * inH * inW
                scratch.initialize(repeating: 0, count: planeSize)
                for z in 0..<inD {
                    for row in 0..<inH {
                        let padded = scratch + ((z + g.padsBegin[0]) * padH + row + g.padsBegin[1]) * rowStride
                        let from = source + (z * inH + row) * inW
                        if sW == 1 {
                            (padded + g.padsBegin[2]).update(from: from, count: inW)
                        } else {
                            // Phase `phase` holds padded columns phase, phase + sW, …; the first one
                            // inside the input is at index `first` (no division per element).
                            for phase in 0..<sW {
                                let shift = phase - g.padsBegin[2]
                                var index = shift >= 0 ? 0 : (-shift + sW - 1) / sW
                                var column = index * sW + shift
                                let destination = padded + phase * phaseW
                                while column < inW {
                                    destination[index] = from[column]
                                    index += 1
                                    column += sW
                                }
                            }
                        }
                    }
                }
                let filter = w + c * taps
                let initial = b?[c] ?? 0
                let destination = y + plane * outD * outH * outW
                /// Where tap `kw` of padded row `base` starts for output column 0.
                func tap(_ base: UnsafeMutablePointer<Float>, _ kw: Int) -> UnsafeMutablePointer<Float> {
                    base + ((kw * dW) % sW) * phaseW + (kw * dW) / sW
                }
                for z in 0..<outD {
                    for row in 0..<outH {
                        let out = destination + (z * outH + row) * outW
                        let rowBase = { (kd: Int, kh: Int) in scratch + ((z * sD + kd * dD) * padH + row * sH + kh * dH) * rowStride }
                        if threeByThree {
                            let (r0, r1, r2) = (rowBase(0, 0), rowBase(0, 1), rowBase(0, 2))
                            let (a0, a1, a2) = (tap(r0, 0), tap(r0, 1), tap(r0, 2))
                            let (b0, b1, b2) = (tap(r1, 0), tap(r1, 1), tap(r1, 2))
                            let (c0, c1, c2) = (tap(r2, 0), tap(r2, 1), tap(r2, 2))
                            threeByThreeRow(out, (a0, a1, a2, b0, b1, b2, c0, c1, c2), filter, initial, 0..<outW)
                            activation?.apply(out, count: outW)
                            continue
                        }
                        out.update(repeating: initial, count: outW)
                        for kd in 0..<kD {
                            for kh in 0..<kH {
                                let base = rowBase(kd, kh)
                                for kw in 0..<kW {
                                    let weight = filter[(kd * kH + kh) * kW + kw]
                                    let input = tap(base, kw)
                                    for column in 0..<outW { out[column] += input[column] * weight }
                                }
                            }
                        }
                        activation?.apply(out, count: outW)
                    }
                }
            }
        }
    }

    /// `out[column] = initial + Σ taps[i][column] · filter[i]` over `columns`, nine taps, sixteen
    /// columns at a time in explicit `SIMD16` (eight or four on short rows; with ten pointers
    /// that may alias, the loop vectorizer gives up on the plain loop).
    @inline(__always)
    static func threeByThreeRow(
        _ out: UnsafeMutablePointer<Float>,
        _ taps: (
            UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
            UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
            UnsafeMutablePointer<Float>
        ),
        _ filter: UnsafeMutablePointer<Float>, _ initial: Float, _ columns: Range<Int>
    ) {
        let (w0, w1, w2, w3, w4) = (filter[0], filter[1], filter[2], filter[3], filter[4])
        let (w5, w6, w7, w8) = (filter[5], filter[6], filter[7], filter[8])
        let (a0, a1, a2, b0, b1, b2, c0, c1, c2) = taps
        @inline(__always) func step<V: SIMD>(_ type: V.Type, _ column: Int) where V.Scalar == Float {
            @inline(__always) func load(_ pointer: UnsafeMutablePointer<Float>) -> V {
                UnsafeRawPointer(pointer + column).loadUnaligned(as: V.self)
            }
            var sum = V(repeating: initial) + load(a0) * w0 + load(a1) * w1 + load(a2) * w2
            sum += load(b0) * w3 + load(b1) * w4 + load(b2) * w5
            sum += load(c0) * w6 + load(c1) * w7 + load(c2) * w8
            UnsafeMutableRawPointer(out + column).storeBytes(of: sum, as: V.self)
        }
        // Whole vectors, then one last vector that ends at the last column and overlaps the
        // previous one (its columns are computed twice, to the same values): no scalar tail
        // on rows of 4 columns and more, which are nearly all of MobileNet's.
        let (first, end) = (columns.lowerBound, columns.upperBound)
        @inline(__always) func sweep<V: SIMD>(_ type: V.Type) where V.Scalar == Float {
            var column = first
            while column + V.scalarCount <= end {
                step(V.self, column)
                column += V.scalarCount
            }
            if column < end { step(V.self, end - V.scalarCount) }
        }
        if end - first >= 16 {
            sweep(SIMD16<Float>.self)
        } else if end - first >= 8 {
            sweep(SIMD8<Float>.self)
        } else if end - first >= 4 {
            sweep(SIMD4<Float>.self)
        } else {
            for column in columns {
                var sum = initial + a0[column] * w0 + a1[column] * w1 + a2[column] * w2
                sum += b0[column] * w3 + b1[column] * w4 + b2[column] * w5
                sum += c0[column] * w6 + c1[column] * w7 + c2[column] * w8
                out[column] = sum
            }
        }
    }

    /// 3×3 2-D depthwise convolution with dilation 1 and stride 1 or 2 (all of MobileNet's),
    /// row by row, no padded copy of the plane, the activation applied to each row while it is
    /// in cache. Stride 1 reads the input in place: rows above or below it read a zero row,
    /// the columns whose three taps all land inside go through `threeByThreeRow`, and only
    /// the (at most two) edge columns check bounds. Stride 2 first splits each of the three
    /// input rows into its even and odd padded columns (`splitPhases`), so that every tap
    /// again reads consecutive floats.
    static func depthwise3x3(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, planes: Int, channels: Int, inSize: [Int], outSize: [Int],
        top: Int, left: Int, stride: Int, activation: Activation?, pool: ThreadPool
    ) {
        let (inH, inW) = (inSize[1], inSize[2])
        let (outH, outW) = (outSize[1], outSize[2])
        if outW <= 32 {
            depthwise3x3Sweep(
                x: x, w: w, b: b, y: y, planes: planes, channels: channels, inH: inH, inW: inW, outH: outH, outW: outW, top: top,
                left: left, stride: stride, activation: activation, pool: pool)
            return
        }
        // Stride 1: output columns [inner, innerEnd) read input columns column − left + 0…2, all inside.
        let inner = min(outW, left)
        let innerEnd = max(inner, min(outW, inW - 2 + left))
        // Stride 2: tap kw of output column c reads phase kw % 2 at c + kw / 2.
        let phaseW = outW + 1
        // A chunk of at least ~64 K multiply-adds: below that, handing work to another thread
        // costs more than it saves (measured on MobileNetV2-96's small layers).
        pool.parallelFor(planes, minimumChunk: max(1, (1 << 16) / max(1, 9 * outH * outW))) { range in
            let zero = UnsafeMutablePointer<Float>.allocate(capacity: max(inW, 1))
            zero.initialize(repeating: 0, count: max(inW, 1))
            let phases = UnsafeMutablePointer<Float>.allocate(capacity: stride == 2 ? 6 * phaseW : 0)
            defer {
                zero.deallocate()
                phases.deallocate()
            }
            // Which input row each slot of `phases` holds, and for which plane.
            var splitRows = [Int](repeating: .min, count: 3)
            var splitPlane = -1
            for plane in range {
                let filter = w + (plane % channels) * 9
                let initial = b?[plane % channels] ?? 0
                let source = x + plane * inH * inW
                let destination = y + plane * outH * outW
                for row in 0..<outH {
                    let out = destination + row * outW
                    func line(_ kh: Int) -> UnsafeMutablePointer<Float>? {
                        let input = row * stride - top + kh
                        return input >= 0 && input < inH ? source + input * inW : nil
                    }
                    if stride == 2 {
                        // Three slots of split rows; input row 2r + 1 - top + 2, the last one of
                        // output row r, is the first of row r + 1 and is split only once.
                        func split(_ kh: Int) -> UnsafeMutablePointer<Float> {
                            let input = row * 2 - top + kh
                            let slot = ((input % 3) + 3) % 3
                            let phasesOfRow = phases + slot * 2 * phaseW
                            if splitRows[slot] != input || splitPlane != plane {
                                splitPhases(line(kh), inW: inW, left: left, into: phasesOfRow, phaseW: phaseW)
                                splitRows[slot] = input
                            }
                            return phasesOfRow
                        }
                        let (p0, p1, p2) = (split(0), split(1), split(2))
                        splitPlane = plane
                        threeByThreeRow(
                            out, (p0, p0 + phaseW, p0 + 1, p1, p1 + phaseW, p1 + 1, p2, p2 + phaseW, p2 + 1), filter, initial, 0..<outW)
                        activation?.apply(out, count: outW)
                        continue
                    }
                    let (r0, r1, r2) = (line(0) ?? zero, line(1) ?? zero, line(2) ?? zero)
                    // Tap kw of output column c reads input column c − left + kw.
                    threeByThreeRow(
                        out,
                        (r0 - left, r0 - left + 1, r0 - left + 2, r1 - left, r1 - left + 1, r1 - left + 2, r2 - left, r2 - left + 1, r2 - left + 2),
                        filter, initial, inner..<innerEnd)
                    if left == 1 && inner == 1 && innerEnd == outW - 1 && outW == inW && inW >= 2 {
                        // Padding 1 on both sides (nearly every case): the two edge columns written out.
                        let (l, r) = (inW - 2, inW - 1)
                        var sum = initial + r0[0] * filter[1] + r0[1] * filter[2] + r1[0] * filter[4] + r1[1] * filter[5]
                        out[0] = sum + r2[0] * filter[7] + r2[1] * filter[8]
                        sum = initial + r0[l] * filter[0] + r0[r] * filter[1] + r1[l] * filter[3] + r1[r] * filter[4]
                        out[r] = sum + r2[l] * filter[6] + r2[r] * filter[7]
                        activation?.apply(out, count: outW)
                        continue
                    }
                    func edge(_ column: Int) {
                        var sum = initial
                        for kw in 0..<3 {
                            let input = column - left + kw
                            guard input >= 0 && input < inW else { continue }
                            sum += r0[input] * filter[kw] + r1[input] * filter[3 + kw] + r2[input] * filter[6 + kw]
                        }
                        out[column] = sum
                    }
                    for column in 0..<inner { edge(column) }
                    for column in innerEnd..<outW { edge(column) }
                    activation?.apply(out, count: outW)
                }
            }
        }
    }

    /// 3×3 depthwise convolution of small planes (at most 32 output columns: MobileNet's layers
    /// from 28×28 down, hundreds of channels each), plane by plane, each computed as one long
    /// row: per-row work (edge columns, short vectors, calls) had been most of their time.
    ///
    /// Stride 1: the plane is copied into a zero-padded plane (its border is zeroed once per
    /// thread and stays zero: every plane writes the same interior); output (r, c) reads padded
    /// (r + kh, c + kw), so all outputs are swept at once over r · paddedW + c, the two columns
    /// past each row's end computed and dropped. Stride 2: the plane is split into four phase
    /// planes (even/odd padded rows × even/odd padded columns, 16-float loads) — its rows
    /// straight from the input when they are at least 16 wide, else through the padded copy —
    /// after which output (r, c) reads phase (kh % 2, kw % 2) at (r + kh / 2, c + kw / 2) and is
    /// swept the same way. The activation runs once over the swept plane, which is then compacted.
    static func depthwise3x3Sweep(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, planes: Int, channels: Int, inH: Int, inW: Int, outH: Int, outW: Int,
        top: Int, left: Int, stride: Int, activation: Activation?, pool: ThreadPool
    ) {
        // Stride 1: a padded row per output row and two more, each outW + 2 wide (the sweep's row).
        // Stride 2: two padded rows per output row and two more, each 2 · phaseW wide, phaseW ≥ 8
        // so that a padded row has the 16 floats `splitWideRow` loads at once.
        let phaseW = stride == 1 ? outW + 2 : max(outW + 1, 8)
        let (paddedH, paddedW) = stride == 1 ? (outH + 2, phaseW) : (2 * (outH + 1), 2 * phaseW)
        let sweepLength = outH * phaseW
        let paddedSize = paddedH * paddedW + 16
        let phaseSize = (outH + 1) * phaseW
        // The input rows and columns that land in the padded plane (the rest is never read).
        let rows = max(0, min(inH, paddedH - top))
        let columns = max(0, min(inW, paddedW - left))
        // Stride 2 on input rows of 16 and more: the rows are split straight into the phase planes.
        let direct = stride == 2 && inW >= 16
        pool.parallelFor(planes, minimumChunk: max(1, (1 << 16) / max(1, 9 * outH * outW))) { range in
            let scratchSize = paddedSize + (stride == 2 ? 4 * phaseSize + 16 : 0) + sweepLength + 16
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: scratchSize)
            scratch.initialize(repeating: 0, count: scratchSize)
            defer { scratch.deallocate() }
            let padded = scratch
            let phases = scratch + paddedSize
            let sweep = phases + (stride == 2 ? 4 * phaseSize + 16 : 0)
            for plane in range {
                let source = x + plane * inH * inW
                if !direct {
                    for row in 0..<rows { copyShort(source + row * inW, to: padded + (row + top) * paddedW + left, count: columns) }
                }
                let taps:
                    (
                        UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                        UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                        UnsafeMutablePointer<Float>
                    )
                if stride == 1 {
                    let p = padded
                    taps = (p, p + 1, p + 2, p + phaseW, p + phaseW + 1, p + phaseW + 2, p + 2 * phaseW, p + 2 * phaseW + 1, p + 2 * phaseW + 2)
                } else {
                    // Phase (a, b) holds padded (2i + a, 2j + b) at i · phaseW + j.
                    if direct {
                        // Only input cells are written: the padding stays zero from the start.
                        for row in 0..<rows {
                            let paddedRow = row + top
                            let phase0 = phases + (paddedRow % 2) * 2 * phaseSize + (paddedRow / 2) * phaseW
                            splitWideRow(source + row * inW, inW: inW, left: left, phase0: phase0, phase1: phase0 + phaseSize)
                        }
                    }
                    for paddedRow in 0..<paddedH where !direct {
                        let phase0 = phases + (paddedRow % 2) * 2 * phaseSize + (paddedRow / 2) * phaseW
                        splitWideRow(padded + paddedRow * paddedW, inW: paddedW, left: 0, phase0: phase0, phase1: phase0 + phaseSize)
                    }
                    let (p00, p01, p10, p11) = (phases, phases + phaseSize, phases + 2 * phaseSize, phases + 3 * phaseSize)
                    taps = (p00, p01, p00 + 1, p10, p11, p10 + 1, p00 + phaseW, p01 + phaseW, p00 + phaseW + 1)
                }
                threeByThreeRow(sweep, taps, w + (plane % channels) * 9, b?[plane % channels] ?? 0, 0..<sweepLength)
                activation?.apply(sweep, count: sweepLength)
                let destination = y + plane * outH * outW
                for row in 0..<outH { copyShort(sweep + row * phaseW, to: destination + row * outW, count: outW) }
            }
        }
    }
}
