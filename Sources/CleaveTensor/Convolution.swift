/// The spatial arrangement of a convolution or pooling window, for 1 to 3 spatial dimensions.
///
/// All arrays have one entry per spatial dimension; pads are explicit (ONNX
/// `auto_pad` is resolved by the caller).
public struct WindowGeometry: Sendable, Equatable {
    /// Window size per spatial dimension.
    public var kernel: [Int]
    /// Step between windows.
    public var strides: [Int]
    /// Spacing between window taps (1 = dense).
    public var dilations: [Int]
    /// Padding before the first element of each spatial dimension.
    public var padsBegin: [Int]
    /// Padding after the last element of each spatial dimension.
    public var padsEnd: [Int]
    /// Number of channel groups (convolutions only; equal to the channel count for depthwise).
    public var group: Int

    /// A geometry; `strides` and `dilations` default to 1, pads to 0.
    public init(
        kernel: [Int], strides: [Int]? = nil, dilations: [Int]? = nil,
        padsBegin: [Int]? = nil, padsEnd: [Int]? = nil, group: Int = 1
    ) {
        self.kernel = kernel
        self.strides = strides ?? kernel.map { _ in 1 }
        self.dilations = dilations ?? kernel.map { _ in 1 }
        self.padsBegin = padsBegin ?? kernel.map { _ in 0 }
        self.padsEnd = padsEnd ?? kernel.map { _ in 0 }
        self.group = group
    }

    /// The same geometry with leading unit dimensions so that it has exactly three.
    public var promoted: WindowGeometry {
        if kernel.count == 3 { return self }
        let missing = 3 - kernel.count
        func lead(_ values: [Int], _ fill: Int) -> [Int] { [Int](repeating: fill, count: missing) + values }
        return WindowGeometry(
            kernel: lead(kernel, 1), strides: lead(strides, 1), dilations: lead(dilations, 1),
            padsBegin: lead(padsBegin, 0), padsEnd: lead(padsEnd, 0), group: group)
    }
}

/// Spatial sizes padded with leading ones to three dimensions.
func promoted3(_ spatial: ArraySlice<Int>) -> [Int] {
    [Int](repeating: 1, count: 3 - spatial.count) + spatial
}

/// Forward convolution (ONNX `Conv`) on float32 NC… tensors.
public enum Convolution {
    /// Convolves `input` `[N, C, S…]` with `weight` `[M, C/group, K…]`, adds `bias` `[M]`, writes `output` `[N, M, O…]`.
    ///
    /// Uses a direct loop for depthwise convolutions, Winograd F(2×2, 3×3) for 3×3 stride-1
    /// ones with at least 16 channels in and out, and products otherwise (1×1 stride-1
    /// unpadded ones on the input as is, others through im2col), 2-D one-group ones in blocks
    /// of output rows that stay in cache; transforms and im2col matrices live in `scratch`.
    ///
    /// The epilogue — `output = activation(convolution + bias + residual)`, `residual` of the
    /// output's shape — is applied where each part of the output is computed (a row of a
    /// depthwise kernel, a block of a product, a tile of Winograd's output transform), so the
    /// output makes one trip through memory; the few paths that cannot make one pass at the end.
    public static func forward(
        input: Tensor, weight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, residual: Tensor? = nil, activation: Activation? = nil, pool: ThreadPool = ThreadPool(threads: 1),
        scratch: ScratchBuffer = ScratchBuffer()
    ) {
        precondition(residual.map { $0.shape == output.shape && $0.dtype == .float32 } ?? true, "residual must have the output's shape")
        let epilogue = Epilogue(residual: residual?.pointer(as: Float.self), activation: activation)
        let appliedInside = convolve(
            input: input, weight: weight, bias: bias, geometry: geometry, into: output, epilogue: epilogue, pool: pool, scratch: scratch)
        guard !appliedInside else { return }
        if let residual {
            Activation.addResidual(residual, into: output, then: activation, pool: pool)
        } else {
            activation?.apply(output, into: output, pool: pool)
        }
    }

    /// What is applied to a convolution's output after the bias: `activation(value + residual)`.
    struct Epilogue {
        /// The tensor added element by element (same shape as the output), if any.
        let residual: UnsafeMutablePointer<Float>?
        let activation: Activation?

        /// Adds `bias` (one output channel's, if given) and applies the epilogue to `count`
        /// outputs at `values`, which sit at flat output index `offset`.
        @inline(__always)
        func apply(_ values: UnsafeMutablePointer<Float>, count: Int, offset: Int, bias: Float? = nil) {
            if let bias {
                for index in 0..<count { values[index] += bias }
            }
            if let residual {
                let r = residual + offset
                for index in 0..<count { values[index] += r[index] }
            }
            activation?.apply(values, count: count)
        }
    }

    /// `forward` without its final pass; returns whether the epilogue was applied.
    static func convolve(
        input: Tensor, weight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, epilogue: Epilogue, pool: ThreadPool, scratch: ScratchBuffer
    ) -> Bool {
        let g = geometry.promoted
        let batch = input.shape[0]
        let channels = input.shape[1]
        let outChannels = weight.shape[0]
        let groups = g.group
        let channelsPerGroup = channels / groups
        let outPerGroup = outChannels / groups
        let inSize = promoted3(input.shape[2...])
        let outSize = promoted3(output.shape[2...])
        let inSpatial = inSize.reduce(1, *)
        let outSpatial = outSize.reduce(1, *)
        let taps = g.kernel.reduce(1, *)
        let x = input.pointer(as: Float.self)
        let w = weight.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        let b = bias?.pointer(as: Float.self)

        if groups == channels && outChannels == channels {
            // A depthwise convolution applies the activation per row; a residual (never seen after
            // one in the CNNs we know) is added by the caller's pass.
            let activation = epilogue.residual == nil ? epilogue.activation : nil
            if g.kernel == [1, 3, 3] && g.dilations == [1, 1, 1] && inSize[0] == 1 && g.padsBegin[0] == 0
                && (g.strides == [1, 1, 1] || g.strides == [1, 2, 2])
            {
                depthwise3x3(
                    x: x, w: w, b: b, y: y, planes: batch * channels, channels: channels, inSize: inSize, outSize: outSize,
                    top: g.padsBegin[1], left: g.padsBegin[2], stride: g.strides[1], activation: activation, pool: pool)
            } else {
                depthwise(
                    x: x, w: w, b: b, y: y, batch: batch, channels: channels,
                    inSize: inSize, outSize: outSize, g: g, activation: activation, pool: pool)
            }
            return epilogue.residual == nil
        }

        if winogradApplies(g, inDepth: inSize[0], channels: channels, outChannels: outChannels, outSpatial: outSpatial) {
            winograd(
                x: x, filters: nil, w: w, b: b, y: y, batch: batch, channels: channels, outChannels: outChannels, inSize: inSize, outSize: outSize,
                g: g, epilogue: epilogue, pool: pool, scratch: scratch)
            return true
        }

        let pointwise = taps == 1 && g.strides == [1, 1, 1] && g.padsBegin == [0, 0, 0] && g.padsEnd == [0, 0, 0]
        if groups == 1 {
            // Blocks of output rows pay only where the im2col matrix would not fit in the L2
            // cache (ResNet's 7×7 stem: 7 MiB; MobileNetV2's 3×3 one: 1.3 MiB, 490 → 430 µs);
            // smaller products ran slower split into blocks, ResNet's 3×3 /2 ones (≥ 1.7 MiB) the same.
            if !pointwise && inSize[0] == 1 && outSize[0] == 1 && channels * taps * outSpatial >= 1 << 18 {
                blockedProduct(
                    x: x, w: w, b: b, y: y, batch: batch, channels: channels, outChannels: outChannels, inSize: inSize,
                    outSize: outSize, g: g, epilogue: epilogue, pool: pool, scratch: scratch)
                return true
            }
            let k = channels * taps
            // Every element of the im2col matrix is written (padding explicitly), so it needs no clearing.
            let columns = pointwise ? nil : scratch.floats(k * outSpatial)
            for n in 0..<batch {
                let image = x + n * channels * inSpatial
                if let columns {
                    imageToColumns(image, channels: channels, inSize: inSize, outSize: outSize, g: g, columns: columns, pool: pool)
                }
                TiledGEMM.multiply(
                    m: outChannels, n: outSpatial, k: k, a: w, lda: k, b: UnsafePointer(columns ?? image), ldb: outSpatial,
                    c: y + n * outChannels * outSpatial, ldc: outSpatial, bias: b, epilogue: epilogue,
                    residualOffset: n * outChannels * outSpatial, pool: pool)
            }
            return true
        }
        let rowsPerGroup = channelsPerGroup * taps
        // Every element of the im2col matrix is written (padding explicitly), so it needs no clearing.
        let columns = pointwise ? nil : scratch.floats(rowsPerGroup * outSpatial)
        for n in 0..<batch {
            for group in 0..<groups {
                let groupInput = x + (n * channels + group * channelsPerGroup) * inSpatial
                let source: UnsafePointer<Float>
                if let columns {
                    imageToColumns(
                        groupInput, channels: channelsPerGroup, inSize: inSize,
                        outSize: outSize, g: g, columns: columns, pool: pool)
                    source = UnsafePointer(columns)
                } else {
                    source = UnsafePointer(groupInput)
                }
                GEMM.multiply(
                    m: outPerGroup, n: outSpatial, k: rowsPerGroup,
                    a: w + group * outPerGroup * rowsPerGroup, lda: rowsPerGroup,
                    b: source, ldb: outSpatial,
                    c: y + (n * outChannels + group * outPerGroup) * outSpatial, ldc: outSpatial, pool: pool)
            }
        }
        // Grouped convolutions (rare: depthwise ones have their own kernels) get bias, residual
        // and activation in one pass over each output row after the products.
        pool.parallelFor(batch * outChannels, minimumChunk: max(1, (1 << 14) / max(1, outSpatial))) { range in
            for row in range {
                epilogue.apply(y + row * outSpatial, count: outSpatial, offset: row * outSpatial, bias: b?[row % outChannels])
            }
        }
        return true
    }

    /// A 2-D one-group convolution whose im2col matrix would not fit in cache, one block of
    /// whole output rows at a time: each block's im2col rows (~384 KiB with its output) are
    /// built and multiplied while they are in the L2 cache, the epilogue applied by
    /// ``TiledGEMM``. Blocks are spread over the pool's threads; when there are fewer blocks
    /// than threads, output channels are split as well.
    static func blockedProduct(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, outChannels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, epilogue: Epilogue, pool: ThreadPool, scratch: ScratchBuffer
    ) {
        let (outH, outW) = (outSize[1], outSize[2])
        let outSpatial = outH * outW
        let inSpatial = inSize[1] * inSize[2]
        let k = channels * g.kernel[1] * g.kernel[2]
        let m = outChannels
        let budget = 96 * 1024
        let rowsPerBlock = max(1, min(outH, budget / max(1, (m + k) * outW)))
        let rowBlocks = (outH + rowsPerBlock - 1) / rowsPerBlock
        let channelSplit = batch * rowBlocks >= pool.threads ? 1 : max(1, min(pool.threads, m / 16))
        let tasks = batch * rowBlocks * channelSplit
        let workers = min(pool.threads, tasks)
        let blockColumns = rowsPerBlock * outW
        // Every element of an im2col block is written (padding explicitly), so it needs no clearing.
        let columns = scratch.floats(workers * k * blockColumns)
        pool.parallelFor(workers) { range in
            for worker in range {
                for task in (tasks * worker / workers)..<(tasks * (worker + 1) / workers) {
                    let split = task % channelSplit
                    let block = (task / channelSplit) % rowBlocks
                    let n = task / (channelSplit * rowBlocks)
                    let firstRow = block * rowsPerBlock
                    let width = min(rowsPerBlock, outH - firstRow) * outW
                    let start = firstRow * outW
                    let (first, last) = (m * split / channelSplit, m * (split + 1) / channelSplit)
                    let image = x + n * channels * inSpatial
                    let slice = columns + worker * k * blockColumns
                    imageToColumns(
                        image, channels: channels, inSize: inSize, outSize: outSize, g: g, outputRows: firstRow..<(firstRow + width / outW),
                        columns: slice, pool: nil)
                    TiledGEMM.multiply(
                        m: last - first, n: width, k: k, a: w + first * k, lda: k, b: slice, ldb: width,
                        c: y + (n * m + first) * outSpatial + start, ldc: outSpatial, bias: b.map { UnsafePointer($0 + first) },
                        epilogue: epilogue, residualOffset: (n * m + first) * outSpatial + start, pool: nil)
                }
            }
        }
    }

    /// Unfolds the windows of `channels` planes into a `[channels·taps, outSpatial]` matrix.
    ///
    /// Each matrix row is one (channel, tap) pair; along a row, the output columns whose
    /// tap lands inside the input form one contiguous run, copied in one go (a `memcpy`
    /// for stride 1), and the columns that land in the padding are zero-filled around it.
    ///
    /// With `outputRows`, only those output rows (of a 2-D convolution) are unfolded: the
    /// matrix is then `[channels·taps, outputRows.count · outW]`.
    static func imageToColumns(
        _ x: UnsafeMutablePointer<Float>, channels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, outputRows: Range<Int>? = nil, columns: UnsafeMutablePointer<Float>, pool: ThreadPool?
    ) {
        let (inD, inH, inW) = (inSize[0], inSize[1], inSize[2])
        let (outD, outH, outW) = (outSize[0], outSize[1], outSize[2])
        let (kD, kH, kW) = (g.kernel[0], g.kernel[1], g.kernel[2])
        let (sD, sH, sW) = (g.strides[0], g.strides[1], g.strides[2])
        let (dD, dH, dW) = (g.dilations[0], g.dilations[1], g.dilations[2])
        let (pD, pH, pW) = (g.padsBegin[0], g.padsBegin[1], g.padsBegin[2])
        let rows = outputRows ?? 0..<outH
        let outSpatial = outD * rows.count * outW
        if sW == 2 && dW == 1 && inD == 1 && kD == 1 {
            unfoldStride2(
                x, channels: channels, inH: inH, inW: inW, outW: outW, kH: kH, kW: kW, sH: sH, dH: dH, pH: pH, pW: pW,
                rows: rows, columns: columns, pool: pool)
            return
        }
        (pool ?? ThreadPool(threads: 1)).parallelFor(channels) { range in
            for c in range {
                let plane = x + c * inD * inH * inW
                for kd in 0..<kD {
                    for kh in 0..<kH {
                        for kw in 0..<kW {
                            let row = ((c * kD + kd) * kH + kh) * kW + kw
                            var destination = columns + row * outSpatial
                            // Output columns [first, last) read input columns inside [0, inW).
                            let start = kw * dW - pW
                            let first = min(outW, start >= 0 ? 0 : (-start + sW - 1) / sW)
                            let last = max(first, min(outW, start >= inW ? 0 : (inW - 1 - start) / sW + 1))
                            for z in 0..<outD {
                                let iz = z * sD - pD + kd * dD
                                if iz < 0 || iz >= inD {
                                    destination.update(repeating: 0, count: rows.count * outW)
                                    destination += rows.count * outW
                                    continue
                                }
                                for yy in rows {
                                    let iy = yy * sH - pH + kh * dH
                                    if iy < 0 || iy >= inH {
                                        destination.update(repeating: 0, count: outW)
                                        destination += outW
                                        continue
                                    }
                                    let sourceRow = plane + (iz * inH + iy) * inW + start
                                    destination.update(repeating: 0, count: first)
                                    if sW == 1 {
                                        (destination + first).update(from: sourceRow + first, count: last - first)
                                    } else {
                                        for xx in first..<last { destination[xx] = sourceRow[xx * sW] }
                                    }
                                    (destination + last).update(repeating: 0, count: outW - last)
                                    destination += outW
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `imageToColumns` for 2-D windows with horizontal stride 2 (downsampling layers, ResNet's
    /// stem): each input row is split once into its even and odd padded columns, after which
    /// every horizontal tap of that row is a copy of consecutive floats (a strided gather per
    /// tap ran one float at a time, and small planes paid per-row call overhead).
    static func unfoldStride2(
        _ x: UnsafeMutablePointer<Float>, channels: Int, inH: Int, inW: Int, outW: Int, kH: Int, kW: Int, sH: Int, dH: Int,
        pH: Int, pW: Int, rows: Range<Int>, columns: UnsafeMutablePointer<Float>, pool: ThreadPool?
    ) {
        let outSpatial = rows.count * outW
        // Room for every tap of every output column and for every input column (splitPhases
        // drops none it can place).
        let phaseW = max(outW + (kW - 1) / 2 + 1, (inW + pW) / 2 + 9)
        (pool ?? ThreadPool(threads: 1)).parallelFor(channels) { range in
            let phases = UnsafeMutablePointer<Float>.allocate(capacity: 2 * phaseW)
            defer { phases.deallocate() }
            for c in range {
                let plane = x + c * inH * inW
                for kh in 0..<kH {
                    // Row (c, kh, kw) of the matrix starts at ((c·kH + kh)·kW + kw)·outSpatial.
                    var destination = columns + (c * kH + kh) * kW * outSpatial
                    for yy in rows {
                        let iy = yy * sH - pH + kh * dH
                        let inside = iy >= 0 && iy < inH
                        if inside { splitPhases(plane + iy * inW, inW: inW, left: pW, into: phases, phaseW: phaseW) }
                        for kw in 0..<kW {
                            let target = destination + kw * outSpatial
                            guard inside else {
                                target.update(repeating: 0, count: outW)
                                continue
                            }
                            copyShort(phases + (kw % 2) * phaseW + kw / 2, to: target, count: outW)
                        }
                        destination += outW
                    }
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

    /// Splits an input row of at least 16 floats into its two stride-2 column phases: input
    /// column c is padded column c + left, which goes to phase (c + left) % 2 at index
    /// (c + left) / 2. Sixteen floats per load (its even and odd halves), the last load
    /// overlapping the one before; padding cells are not written.
    @inline(__always)
    static func splitWideRow(
        _ source: UnsafePointer<Float>, inW: Int, left: Int, phase0: UnsafeMutablePointer<Float>, phase1: UnsafeMutablePointer<Float>
    ) {
        // Even input columns 2j land at index j + left / 2 of one phase, odd ones at j + (left + 1) / 2 of the other.
        let even = (left % 2 == 0 ? phase0 : phase1) + left / 2
        let odd = (left % 2 == 0 ? phase1 : phase0) + (left + 1) / 2
        let lastStart = (inW - 16) / 2
        var j = 0
        while true {
            let start = min(j, lastStart)
            let pair = UnsafeRawPointer(source + 2 * start).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(even + start).storeBytes(of: pair.evenHalf, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(odd + start).storeBytes(of: pair.oddHalf, as: SIMD8<Float>.self)
            if start == lastStart { break }
            j += 8
        }
        // An odd width leaves its last (even) column past the last load.
        if inW % 2 == 1 { even[(inW - 1) / 2] = source[inW - 1] }
    }

    /// Copies a short run of floats between buffers that do not overlap: eight at a time and one
    /// last eight that overlaps the previous ones, no call (rows of small planes).
    @inline(__always)
    static func copyShort(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        guard count >= 8 else {
            if count >= 4 {
                // Two four-float moves that overlap (7×7 planes' rows).
                let (head, tail) = (count - 4, 0)
                let last = UnsafeRawPointer(source + head).loadUnaligned(as: SIMD4<Float>.self)
                UnsafeMutableRawPointer(destination + tail).storeBytes(
                    of: UnsafeRawPointer(source + tail).loadUnaligned(as: SIMD4<Float>.self), as: SIMD4<Float>.self)
                UnsafeMutableRawPointer(destination + head).storeBytes(of: last, as: SIMD4<Float>.self)
                return
            }
            for index in 0..<count { destination[index] = source[index] }
            return
        }
        var index = 0
        while true {
            let start = min(index, count - 8)
            UnsafeMutableRawPointer(destination + start).storeBytes(
                of: UnsafeRawPointer(source + start).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
            if start == count - 8 { break }
            index += 8
        }
    }

    /// Splits one input row (nil: a row of padding) into its two stride-2 phases:
    /// `phases[k · phaseW + j]` is padded column `2j + k`, i.e. input column `2j + k − left`,
    /// `padding` outside the row. One pass: each 16-float load gives eight columns of either
    /// phase (its even and odd halves); only the last few columns go one by one.
    @inline(__always)
    static func splitPhases(
        _ source: UnsafePointer<Float>?, inW: Int, left: Int, into phases: UnsafeMutablePointer<Float>, phaseW: Int, padding: Float = 0
    ) {
        // Inline vector stores: `update(repeating:)` is a call to memset, which cost more than
        // the fill on the short rows of small planes.
        var index = 0
        while index + 8 <= 2 * phaseW {
            UnsafeMutableRawPointer(phases + index).storeBytes(of: SIMD8(repeating: padding), as: SIMD8<Float>.self)
            index += 8
        }
        while index < 2 * phaseW {
            phases[index] = padding
            index += 1
        }
        guard let source else { return }
        // Input column c = 2j + t is padded column c + left: phase (t + left) % 2, index j + (t + left) / 2.
        let even = phases + (left % 2) * phaseW + left / 2
        let odd = phases + ((1 + left) % 2) * phaseW + (1 + left) / 2
        var j = 0
        while 2 * j + 16 <= inW {
            let pair = UnsafeRawPointer(source + 2 * j).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(even + j).storeBytes(of: pair.evenHalf, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(odd + j).storeBytes(of: pair.oddHalf, as: SIMD8<Float>.self)
            j += 8
        }
        // The last columns (all of a row narrower than 16) phase by phase: one column at a time
        // in input order alternated between the phases and stalled on the stores (small planes).
        @inline(__always) func rest(_ t: Int, _ target: UnsafeMutablePointer<Float>) {
            // Input column 2·i + t goes to target[i]; only the indices that fit in a phase.
            let end = min((inW - t + 1) / 2, phaseW - (t + left) / 2)
            var i = j
            while i < end {
                target[i] = source[2 * i + t]
                i += 1
            }
        }
        rest(0, even)
        rest(1, odd)
    }
}
