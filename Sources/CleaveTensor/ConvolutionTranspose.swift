/// Transposed convolution (ONNX `ConvTranspose`) on float32 NC… tensors.
public enum ConvolutionTranspose {
    /// Scatters `input` `[N, C, S…]` through `weight` `[C, M/group, K…]` into `output` `[N, M, O…]`, adding `bias` `[M]`.
    ///
    /// GEMM forms the per-tap contributions, then they are added into place
    /// (col2im). Output positions no tap reaches stay at the bias.
    public static func forward(
        input: Tensor, weight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1)
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
        var columns = [Float](repeating: 0, count: rows * inSpatial)
        columns.withUnsafeMutableBufferPointer { columnBuffer in
            let cols = columnBuffer.baseAddress!
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

    private static func scatter(
        _ row: UnsafeMutablePointer<Float>, plane: UnsafeMutablePointer<Float>, tap: (Int, Int, Int),
        inSize: [Int], outSize: [Int], g: WindowGeometry
    ) {
        for z in 0..<inSize[0] {
            let oz = z * g.strides[0] - g.padsBegin[0] + tap.0 * g.dilations[0]
            if oz < 0 || oz >= outSize[0] { continue }
            for yy in 0..<inSize[1] {
                let oy = yy * g.strides[1] - g.padsBegin[1] + tap.1 * g.dilations[1]
                if oy < 0 || oy >= outSize[1] { continue }
                let source = row + (z * inSize[1] + yy) * inSize[2]
                let destination = plane + (oz * outSize[1] + oy) * outSize[2]
                for xx in 0..<inSize[2] {
                    let ox = xx * g.strides[2] - g.padsBegin[2] + tap.2 * g.dilations[2]
                    if ox >= 0 && ox < outSize[2] { destination[ox] += source[xx] }
                }
            }
        }
    }
}
