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
    var promoted: WindowGeometry {
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
    /// ones with at least 16 channels in and out, plain GEMM for 1×1 stride-1 unpadded ones,
    /// and im2col + GEMM otherwise; transforms and the im2col matrix live in `scratch`.
    public static func forward(
        input: Tensor, weight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1), scratch: ScratchBuffer = ScratchBuffer()
    ) {
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
            depthwise(
                x: x, w: w, b: b, y: y, batch: batch, channels: channels,
                inSize: inSize, outSize: outSize, g: g, pool: pool)
            return
        }

        if winogradApplies(g, inDepth: inSize[0], channels: channels, outChannels: outChannels, outSpatial: outSpatial) {
            winograd(
                x: x, filters: nil, w: w, b: b, y: y, batch: batch, channels: channels, outChannels: outChannels, inSize: inSize, outSize: outSize,
                g: g, pool: pool, scratch: scratch)
            return
        }

        let pointwise = taps == 1 && g.strides == [1, 1, 1] && g.padsBegin == [0, 0, 0] && g.padsEnd == [0, 0, 0]
        let rowsPerGroup = channelsPerGroup * taps
        // Every element of the im2col matrix is written (padding explicitly), so it needs no clearing.
        let columns = pointwise ? nil : scratch.floats(rowsPerGroup * outSpatial)
        for n in 0..<batch {
            // The bias seeds the output and GEMM accumulates onto it (beta = 1): no extra pass.
            if let b {
                for m in 0..<outChannels { (y + (n * outChannels + m) * outSpatial).update(repeating: b[m], count: outSpatial) }
            }
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
                    c: y + (n * outChannels + group * outPerGroup) * outSpatial, ldc: outSpatial, beta: b == nil ? 0 : 1, pool: pool)
            }
        }
    }

    /// Unfolds the windows of `channels` planes into a `[channels·taps, outSpatial]` matrix.
    ///
    /// Each matrix row is one (channel, tap) pair; along a row, the output columns whose
    /// tap lands inside the input form one contiguous run, copied in one go (a `memcpy`
    /// for stride 1), and the columns that land in the padding are zero-filled around it.
    static func imageToColumns(
        _ x: UnsafeMutablePointer<Float>, channels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, columns: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let (inD, inH, inW) = (inSize[0], inSize[1], inSize[2])
        let (outD, outH, outW) = (outSize[0], outSize[1], outSize[2])
        let (kD, kH, kW) = (g.kernel[0], g.kernel[1], g.kernel[2])
        let (sD, sH, sW) = (g.strides[0], g.strides[1], g.strides[2])
        let (dD, dH, dW) = (g.dilations[0], g.dilations[1], g.dilations[2])
        let (pD, pH, pW) = (g.padsBegin[0], g.padsBegin[1], g.padsBegin[2])
        let outSpatial = outD * outH * outW
        pool.parallelFor(channels) { range in
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
                                    destination.update(repeating: 0, count: outH * outW)
                                    destination += outH * outW
                                    continue
                                }
                                for yy in 0..<outH {
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

    /// One filter per channel: each output channel reads only its own input channel.
    ///
    /// Each plane is copied once into a zero-padded scratch plane whose rows are split into
    /// `stride` phases (columns 0, s, 2s, … then 1, 1+s, …), so that for any stride the
    /// inner loop over output columns reads consecutive floats with no bounds checks and
    /// vectorizes. 3×3 filters (most of MobileNet) add all nine taps in one pass over a row.
    static func depthwise(
        x: UnsafeMutablePointer<Float>, w: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, pool: ThreadPool
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
                            let (w0, w1, w2, w3, w4) = (filter[0], filter[1], filter[2], filter[3], filter[4])
                            let (w5, w6, w7, w8) = (filter[5], filter[6], filter[7], filter[8])
                            for column in 0..<outW {
                                var sum = initial + a0[column] * w0 + a1[column] * w1 + a2[column] * w2
                                sum += b0[column] * w3 + b1[column] * w4 + b2[column] * w5
                                sum += c0[column] * w6 + c1[column] * w7 + c2[column] * w8
                                out[column] = sum
                            }
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
                    }
                }
            }
        }
    }
}
