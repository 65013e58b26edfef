/// Transposed convolution (ONNX `ConvTranspose`) on float32 NC… tensors.
public enum ConvolutionTranspose {
    /// Scatters `input` `[N, C, S…]` through `weight` `[C, M/group, K…]` into `output` `[N, M, O…]`, adding `bias` `[M]`.
    ///
    /// GEMM forms the per-tap contributions, then they are added into place
    /// (col2im). Output positions no tap reaches stay at the bias.
    public static func forward(
        input: Tensor, weight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1), scratch: ScratchBuffer = ScratchBuffer()
    ) {
        let g = geometry.promoted
        let batch = input.shape[0]
        let channels = input.shape[1]
        let groups = g.group
        let channelsPerGroup = channels / groups
        let outPerGroup = weight.shape[1]
        let outChannels = outPerGroup * groups
        let inSize = promoted3(input.shape[2...])
        let outSize = promoted3(output.shape[2...])
        let inSpatial = inSize.reduce(1, *)
        let outSpatial = outSize.reduce(1, *)
        let (kD, kH, kW) = (g.kernel[0], g.kernel[1], g.kernel[2])
        let rows = outPerGroup * kD * kH * kW
        let x = input.pointer(as: Float.self)
        let w = weight.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        // Every element of the columns is written by the product, so the reused buffer needs no clearing.
        let cols = scratch.floats(rows * inSpatial)
        do {
            for n in 0..<batch {
                for m in 0..<outChannels {
                    let value = bias?.pointer(as: Float.self)[m] ?? 0
                    (y + (n * outChannels + m) * outSpatial).update(repeating: value, count: outSpatial)
                }
                for group in 0..<groups {
                    GEMM.multiply(
                        m: rows, n: inSpatial, k: channelsPerGroup,
                        a: w + group * channelsPerGroup * rows, lda: rows, transposeA: true,
                        b: x + (n * channels + group * channelsPerGroup) * inSpatial, ldb: inSpatial,
                        c: cols, ldc: inSpatial)
                    let outBase = y + (n * outChannels + group * outPerGroup) * outSpatial
                    pool.parallelFor(outPerGroup) { range in
                        for m in range {
                            let plane = outBase + m * outSpatial
                            for kd in 0..<kD {
                                for kh in 0..<kH {
                                    for kw in 0..<kW {
                                        let row = cols + ((m * kD + kd) * kH + kh) * kW * inSpatial + kw * inSpatial
                                        scatter(row, plane: plane, tap: (kd, kh, kw), inSize: inSize, outSize: outSize, g: g)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds one tap's contributions (`row`, one per input position) into the output plane.
    /// Along a row, the input columns whose output column lands inside the plane form one
    /// range, found once, so the inner loop has no bounds checks.
    private static func scatter(
        _ row: UnsafeMutablePointer<Float>, plane: UnsafeMutablePointer<Float>, tap: (Int, Int, Int),
        inSize: [Int], outSize: [Int], g: WindowGeometry
    ) {
        let (inD, inH, inW) = (inSize[0], inSize[1], inSize[2])
        let (outD, outH, outW) = (outSize[0], outSize[1], outSize[2])
        let (sD, sH, sW) = (g.strides[0], g.strides[1], g.strides[2])
        let offsetD = tap.0 * g.dilations[0] - g.padsBegin[0]
        let offsetH = tap.1 * g.dilations[1] - g.padsBegin[1]
        let offsetW = tap.2 * g.dilations[2] - g.padsBegin[2]
        // Input columns [first, last) map to output columns xx · sW + offsetW inside [0, outW).
        let first = offsetW >= 0 ? 0 : (-offsetW + sW - 1) / sW
        let last = min(inW, outW - offsetW <= 0 ? 0 : (outW - offsetW - 1) / sW + 1)
        guard first < last else { return }
        for z in 0..<inD {
            let oz = z * sD + offsetD
            if oz < 0 || oz >= outD { continue }
            for yy in 0..<inH {
                let oy = yy * sH + offsetH
                if oy < 0 || oy >= outH { continue }
                let source = row + (z * inH + yy) * inW
                let destination = plane + (oz * outH + oy) * outW + offsetW
                for xx in first..<last { destination[xx * sW] += source[xx] }
            }
        }
    }
}
