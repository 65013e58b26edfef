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
            if x == y {
                depthwiseInPlace(
                    x: x, w: w, b: b, planes: batch * channels, channels: channels, inSize: inSize, outSize: outSize, g: g,
                    activation: activation, pool: pool)
                return epilogue.residual == nil
            }
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
