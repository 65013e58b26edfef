/// 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin and Gray,
/// "Fast Algorithms for Convolutional Neural Networks", 2016).
///
/// Every 2×2 block of output comes from a 4×4 block of input. Transformed (`Bᵀ d B`,
/// `G g Gᵀ`), the 3×3 convolution of such a block is 16 element-wise products instead
/// of 36 multiply-adds; summed over input channels, those become 16 independent matrix
/// products `[M × C] · [C × tiles]`, and `Aᵀ m A` turns their results back into output.
/// 2.25× fewer multiplies than im2col + GEMM, no 9× copy of the input, for a small loss of
/// precision (about 1e-6 relative in float32).
extension Convolution {
    /// Whether `forward` takes the Winograd path: a 2-D 3×3 filter, stride and dilation 1,
    /// one group, and enough channels for the transforms to pay.
    static func winogradApplies(_ g: WindowGeometry, inDepth: Int, channels: Int, outChannels: Int, outSpatial: Int) -> Bool {
        g.kernel == [1, 3, 3] && g.strides == [1, 1, 1] && g.dilations == [1, 1, 1] && g.group == 1 && inDepth == 1
            && g.padsBegin[0] == 0 && g.padsEnd[0] == 0 && channels >= 16 && outChannels >= 16 && outSpatial >= Self.winogradMinimumOutput
    }

    /// Output positions below which im2col + GEMM stays faster
    /// (28×28 and up on ResNet-18; at 14×14 and 7×7 the transforms of 256–512-channel
    /// filters on every call cost more than they save, `docs/benchmarks.md`).
    static let winogradMinimumOutput = 784

    /// The filters of a `[M, C, 3, 3]` weight in the Winograd domain, `[16, M, C]`:
    /// `U[ξ][m][c] = (G g Gᵀ)[ξ]`. Computed once when a session is optimized (16/9 of the
    /// weight's size), so that `forwardWinograd` does not transform them on every call.
    public static func winogradFilters(_ weight: Tensor, pool: ThreadPool = ThreadPool(threads: 1)) -> Tensor {
        precondition(weight.dtype == .float32 && weight.shape.count == 4 && weight.shape[2] == 3 && weight.shape[3] == 3)
        let (m, c) = (weight.shape[0], weight.shape[1])
        let transformed = Tensor(zeros: [16, m, c], dtype: .float32)
        transformFilters(weight.pointer(as: Float.self), into: transformed.pointer(as: Float.self), m: m, c: c, pool: pool)
        return transformed
    }

    /// A 3×3, stride-1, dilation-1, one-group 2-D convolution of `input` `[N, C, H, W]` by
    /// Winograd F(2×2, 3×3) with filters already transformed by ``winogradFilters(_:pool:)``
    /// (`[16, M, C]`), bias added; any spatial size and padding.
    /// `activation(convolution + bias + residual)` is applied in the output transform, as in ``forward``.
    public static func forwardWinograd(
        input: Tensor, transformedWeight: Tensor, bias: Tensor?, geometry: WindowGeometry,
        into output: Tensor, residual: Tensor? = nil, activation: Activation? = nil, pool: ThreadPool = ThreadPool(threads: 1),
        scratch: ScratchBuffer = ScratchBuffer()
    ) {
        let g = geometry.promoted
        precondition(g.kernel == [1, 3, 3] && g.strides == [1, 1, 1] && g.dilations == [1, 1, 1] && g.group == 1 && input.shape.count == 4)
        precondition(residual.map { $0.shape == output.shape && $0.dtype == .float32 } ?? true, "residual must have the output's shape")
        winograd(
            x: input.pointer(as: Float.self), filters: UnsafePointer(transformedWeight.pointer(as: Float.self)), w: nil,
            b: bias?.pointer(as: Float.self), y: output.pointer(as: Float.self), batch: input.shape[0], channels: input.shape[1],
            outChannels: transformedWeight.shape[1], inSize: promoted3(input.shape[2...]), outSize: promoted3(output.shape[2...]), g: g,
            epilogue: Epilogue(residual: residual?.pointer(as: Float.self), activation: activation), pool: pool, scratch: scratch)
    }

    /// `U[ξ][m][c] = (G g Gᵀ)[ξ]` for every filter of `w` `[m, c, 3, 3]`.
    static func transformFilters(_ w: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>, m: Int, c: Int, pool: ThreadPool) {
        pool.parallelFor(m) { range in
            for row in range {
                for column in 0..<c {
                    let f = w + (row * c + column) * 9
                    // G g: rows g0, (g0 + g1 + g2) / 2, (g0 − g1 + g2) / 2, g2 of the filter's rows.
                    let g0 = SIMD4(f[0], f[1], f[2], 0)
                    let g1 = SIMD4(f[3], f[4], f[5], 0)
                    let g2 = SIMD4(f[6], f[7], f[8], 0)
                    let rows = (g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2)
                    func store(_ r: SIMD4<Float>, _ i: Int) {
                        // (G g) Gᵀ on one row (a, b, e): a, (a + b + e) / 2, (a − b + e) / 2, e.
                        let base = u + (i * 4 * m + row) * c + column
                        base[0] = r[0]
                        base[m * c] = (r[0] + r[1] + r[2]) * 0.5
                        base[2 * m * c] = (r[0] - r[1] + r[2]) * 0.5
                        base[3 * m * c] = r[2]
                    }
                    store(rows.0, 0)
                    store(rows.1, 1)
                    store(rows.2, 2)
                    store(rows.3, 3)
                }
            }
        }
    }

    /// The Winograd convolution of `x` `[batch, C, H, W]` into `y` `[batch, M, outH, outW]`
    /// (bias added), with the filters either transformed already (`filters`, `[16, M, C]`) or
    /// transformed here from `w` `[M, C, 3, 3]`; all transforms live in `scratch`.
    static func winograd(
        x: UnsafeMutablePointer<Float>, filters: UnsafePointer<Float>?, w: UnsafeMutablePointer<Float>?, b: UnsafeMutablePointer<Float>?,
        y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, outChannels: Int, inSize: [Int], outSize: [Int],
        g: WindowGeometry, epilogue: Epilogue, pool: ThreadPool, scratch: ScratchBuffer
    ) {
        let (inH, inW) = (inSize[1], inSize[2])
        let (outH, outW) = (outSize[1], outSize[2])
        let (top, left) = (g.padsBegin[1], g.padsBegin[2])
        let tilesH = (outH + 1) / 2
        let tilesW = (outW + 1) / 2
        let tiles = tilesH * tilesW
        let (m, c) = (outChannels, channels)
        let filterFloats = filters == nil ? 16 * m * c : 0
        let v = scratch.floats(filterFloats + 16 * (c * tiles + m * tiles)) + filterFloats
        let products = v + 16 * c * tiles
        let u: UnsafePointer<Float>
        if let filters {
            u = filters
        } else {
            let transformed = v - filterFloats
            transformFilters(w!, into: transformed, m: m, c: c, pool: pool)
            u = UnsafePointer(transformed)
        }

        for n in 0..<batch {
            // Input tiles: V[c][ξ][tile] = (Bᵀ d B)[ξ].
            pool.parallelFor(c) { range in
                for channel in range {
                    // V is laid out [c][ξ][tile]: one channel's 16 transformed rows are one block
                    // that stays in cache while it is written (16 write streams spread over
                    // megabytes were store-bound); each product reads its ξ rows with a stride.
                    let local = v + channel * 16 * tiles
                    let plane = x + (n * c + channel) * inH * inW
                    for ty in 0..<tilesH {
                        let y0 = ty * 2 - top
                        for tx in 0..<tilesW {
                            let x0 = tx * 2 - left
                            var (r0, r1, r2, r3) = (SIMD4<Float>.zero, SIMD4<Float>.zero, SIMD4<Float>.zero, SIMD4<Float>.zero)
                            if y0 >= 0 && y0 + 4 <= inH && x0 >= 0 && x0 + 4 <= inW {
                                let p = UnsafeRawPointer(plane + y0 * inW + x0)
                                let stride = inW * MemoryLayout<Float>.stride
                                r0 = p.loadUnaligned(as: SIMD4<Float>.self)
                                r1 = (p + stride).loadUnaligned(as: SIMD4<Float>.self)
                                r2 = (p + 2 * stride).loadUnaligned(as: SIMD4<Float>.self)
                                r3 = (p + 3 * stride).loadUnaligned(as: SIMD4<Float>.self)
                            } else {
                                func row(_ r: Int) -> SIMD4<Float> {
                                    var values = SIMD4<Float>.zero
                                    guard y0 + r >= 0 && y0 + r < inH else { return values }
                                    for q in 0..<4 where x0 + q >= 0 && x0 + q < inW { values[q] = plane[(y0 + r) * inW + x0 + q] }
                                    return values
                                }
                                (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3))
                            }
                            let tile = ty * tilesW + tx
                            // Bᵀ d on rows, then the same on each row's columns, scattered to V[ξ].
                            func store(_ e: SIMD4<Float>, _ i: Int) {
                                let base = local + i * 4 * tiles + tile
                                base[0] = e[0] - e[2]
                                base[tiles] = e[1] + e[2]
                                base[2 * tiles] = e[2] - e[1]
                                base[3 * tiles] = e[1] - e[3]
                            }
                            store(r0 - r2, 0)
                            store(r1 + r2, 1)
                            store(r2 - r1, 2)
                            store(r1 - r3, 3)
                        }
                    }
                }
            }
            // Sixteen independent products, spread over the pool's threads.
            pool.parallelFor(16) { range in
                for xi in range {
                    TiledGEMM.multiply(
                        m: m, n: tiles, k: c, a: u + xi * m * c, lda: c, b: v + xi * tiles, ldb: 16 * tiles,
                        c: products + xi * tiles, ldc: 16 * tiles, bias: nil, epilogue: Epilogue(residual: nil, activation: nil),
                        residualOffset: 0, pool: nil)
                }
            }
            // Output: Y = Aᵀ M A per 2×2 block, plus the bias.
            pool.parallelFor(m) { range in
                for row in range {
                    // The products are laid out [m][ξ][tile], like V.
                    let local = products + row * 16 * tiles
                    let bias = b?[row] ?? 0
                    let out = y + (n * m + row) * outH * outW
                    for ty in 0..<tilesH {
                        for tx in 0..<tilesW {
                            let tile = ty * tilesW + tx
                            func gather(_ i: Int) -> SIMD4<Float> {
                                let base = local + i * 4 * tiles + tile
                                return SIMD4(base[0], base[tiles], base[2 * tiles], base[3 * tiles])
                            }
                            let (s0, s1, s2, s3) = (gather(0), gather(1), gather(2), gather(3))
                            let r0 = s0 + s1 + s2
                            let r1 = s1 - s2 - s3
                            let outputs = (
                                (r0[0] + r0[1] + r0[2], r0[1] - r0[2] - r0[3]),
                                (r1[0] + r1[1] + r1[2], r1[1] - r1[2] - r1[3])
                            )
                            for dy in 0..<2 where ty * 2 + dy < outH {
                                let pair = dy == 0 ? outputs.0 : outputs.1
                                let line = out + (ty * 2 + dy) * outW + tx * 2
                                line[0] = pair.0 + bias
                                if tx * 2 + 1 < outW { line[1] = pair.1 + bias }
                            }
                        }
                        // The epilogue on the two output rows this row of tiles wrote, still in cache.
                        let firstRow = ty * 2
                        let rows = min(2, outH - firstRow)
                        epilogue.apply(out + firstRow * outW, count: rows * outW, offset: ((n * m + row) * outH + firstRow) * outW)
                    }
                }
            }
        }
    }
}
