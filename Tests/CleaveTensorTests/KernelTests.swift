import Testing

@testable import CleaveTensor

/// Kernels against straightforward reference loops.
@Suite struct KernelTests {
    func values(_ count: Int, seed: Int) -> [Float] {
        (0..<count).map { Float((($0 + seed) * 7919) % 211) / 100 - 1 }
    }

    func referenceConv(_ x: [Float], _ w: [Float], c: Int, h: Int, wd: Int, m: Int, k: Int, stride: Int, pad: Int, group: Int) -> [Float] {
        let oh = (h + 2 * pad - k) / stride + 1
        let ow = (wd + 2 * pad - k) / stride + 1
        let cg = c / group
        let mg = m / group
        var y = [Float](repeating: 0, count: m * oh * ow)
        for o in 0..<m {
            let g = o / mg
            for i in 0..<oh {
                for j in 0..<ow {
                    var sum: Float = 0
                    for ci in 0..<cg {
                        for a in 0..<k {
                            for b in 0..<k {
                                let yy = i * stride - pad + a
                                let xx = j * stride - pad + b
                                if yy < 0 || yy >= h || xx < 0 || xx >= wd { continue }
                                sum += x[((g * cg + ci) * h + yy) * wd + xx] * w[((o * cg + ci) * k + a) * k + b]
                            }
                        }
                    }
                    y[(o * oh + i) * ow + j] = sum
                }
            }
        }
        return y
    }

    @Test(arguments: [(1, 1, 0, 1), (3, 2, 1, 1), (3, 1, 1, 4), (3, 1, 1, 8), (3, 2, 1, 8), (5, 2, 2, 8), (5, 2, 2, 2)])
    func convolutionMatchesReference(k: Int, stride: Int, pad: Int, group: Int) {
        let (c, h, wd, m) = (8, 9, 7, 8)
        let x = values(c * h * wd, seed: 1)
        let w = values(m * (c / group) * k * k, seed: 2)
        let expected = referenceConv(x, w, c: c, h: h, wd: wd, m: m, k: k, stride: stride, pad: pad, group: group)
        let oh = (h + 2 * pad - k) / stride + 1
        let ow = (wd + 2 * pad - k) / stride + 1
        let output = Tensor(zeros: [1, m, oh, ow])
        Convolution.forward(
            input: Tensor(shape: [1, c, h, wd], scalars: x), weight: Tensor(shape: [m, c / group, k, k], scalars: w), bias: nil,
            geometry: WindowGeometry(kernel: [k, k], strides: [stride, stride], padsBegin: [pad, pad], padsEnd: [pad, pad], group: group),
            into: output, pool: ThreadPool(threads: 2))
        let actual = output.scalars(as: Float.self)
        for index in expected.indices { #expect(abs(actual[index] - expected[index]) < 1e-4) }
    }

    /// The register-tiled product with its epilogue against the plain sum: row counts that are
    /// and are not multiples of the 8-row tile, column counts below 64 (16-column tiles for 16,
    /// 32 and 48, OpenBLAS for 40), with a partial last 32-column tile and in several blocks,
    /// strided operands, every kind of epilogue, one and two threads.
    @Test(arguments: [
        (8, 64, 16, 0), (13, 70, 3, 1), (20, 333, 64, 2), (5, 40, 17, 3), (29, 1100, 9, 1), (3, 96, 1, 0), (16, 2080, 40, 2),
        (13, 16, 30, 2), (24, 48, 9, 1), (11, 32, 5, 3), (9, 90, 7, 2), (13, 49, 20, 3), (6, 57, 33, 1),
    ])
    func tiledProductMatchesReference(m: Int, n: Int, k: Int, epilogueKind: Int) {
        let (lda, ldb, ldc) = (k + 3, n + 5, n + 7)
        let a = values(m * lda, seed: 41)
        let b = values(k * ldb, seed: 42)
        let bias = values(m, seed: 43)
        let residual = values(m * ldc + 11, seed: 44)
        let activation: Activation? = [nil, .relu, .clip(min: -0.5, max: 0.5), .sigmoid][epilogueKind]
        for threads in [1, 2] {
            var c = [Float](repeating: .nan, count: m * ldc)
            residual.withUnsafeBufferPointer { residualBuffer in
                bias.withUnsafeBufferPointer { biasBuffer in
                    c.withUnsafeMutableBufferPointer { output in
                        let epilogue = Convolution.Epilogue(
                            residual: epilogueKind == 0 ? nil : UnsafeMutablePointer(mutating: residualBuffer.baseAddress!), activation: activation)
                        TiledGEMM.multiply(
                            m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: output.baseAddress!, ldc: ldc,
                            bias: epilogueKind == 3 ? nil : biasBuffer.baseAddress!, epilogue: epilogue, residualOffset: 11,
                            pool: ThreadPool(threads: threads))
                    }
                }
            }
            for row in 0..<m {
                for column in 0..<n {
                    var sum = (0..<k).reduce(Float(0)) { $0 + a[row * lda + $1] * b[$1 * ldb + column] }
                    if epilogueKind != 3 { sum += bias[row] }
                    if epilogueKind != 0 { sum += residual[11 + row * ldc + column] }
                    let expected = activation.map { $0(sum) } ?? sum
                    #expect(abs(c[row * ldc + column] - expected) < 1e-4, "threads \(threads) row \(row) column \(column)")
                }
            }
        }
    }

    /// 2×2 stride-2 max pooling (the pairwise vector path: rows of 20 outputs end with an
    /// overlapping vector, rows of 6 go one by one) on odd sizes, against the window maximum.
    @Test(arguments: [41, 13]) func maxPoolPairsMatchReference(width wd: Int) {
        let (planes, h) = (3, 37)
        let (oh, ow) = (h / 2, wd / 2)
        let x = values(planes * h * wd, seed: 51)
        let output = Tensor(zeros: [1, planes, oh, ow])
        Pooling.forward(
            input: Tensor(shape: [1, planes, h, wd], scalars: x), kind: .max, geometry: WindowGeometry(kernel: [2, 2], strides: [2, 2]),
            into: output, pool: ThreadPool(threads: 2))
        let actual = output.scalars(as: Float.self)
        for plane in 0..<planes {
            for i in 0..<oh {
                for j in 0..<ow {
                    let base = (plane * h + 2 * i) * wd + 2 * j
                    let expected = max(max(x[base], x[base + 1]), max(x[base + wd], x[base + wd + 1]))
                    #expect(actual[(plane * oh + i) * ow + j] == expected, "plane \(plane) row \(i) column \(j)")
                }
            }
        }
    }

    /// A 7×7 stride-2 convolution on wide rows (ResNet's stem shape), whose im2col rows are
    /// gathered eight columns at a time: unfolded whole (45 columns) and, above 2²⁰ unfolded
    /// floats (1300 columns: 147 × 11 × 650), in blocks of output rows.
    @Test(arguments: [45, 1300])
    func stridedUnfoldingMatchesReference(width: Int) {
        let (c, h, m) = (3, 21, 8)
        let x = values(c * h * width, seed: 31)
        let w = values(m * c * 49, seed: 32)
        let expected = referenceConv(x, w, c: c, h: h, wd: width, m: m, k: 7, stride: 2, pad: 3, group: 1)
        let (oh, ow) = ((h + 6 - 7) / 2 + 1, (width + 6 - 7) / 2 + 1)
        let output = Tensor(zeros: [1, m, oh, ow])
        Convolution.forward(
            input: Tensor(shape: [1, c, h, width], scalars: x), weight: Tensor(shape: [m, c, 7, 7], scalars: w), bias: nil,
            geometry: WindowGeometry(kernel: [7, 7], strides: [2, 2], padsBegin: [3, 3], padsEnd: [3, 3]), into: output,
            pool: ThreadPool(threads: 2))
        let actual = output.scalars(as: Float.self)
        for index in expected.indices { #expect(abs(actual[index] - expected[index]) < 1e-4, "element \(index)") }
    }

    /// Depthwise 3×3, stride 1 (read in place, edges checked) and 2 (rows split into phases),
    /// small planes (≤ 32 output columns, swept whole) and wide ones, on widths down to one
    /// column, asymmetric and zero padding, with a bias and a fused ReLU6, against the direct sum.
    @Test(
        arguments: [1, 2],
        [
            (9, 7, 1, 1, 1, 1), (9, 7, 0, 0, 0, 0), (5, 1, 1, 1, 1, 1), (4, 2, 1, 0, 0, 1), (6, 3, 0, 1, 1, 0), (8, 40, 1, 1, 1, 1),
            (7, 41, 1, 1, 0, 0), (14, 14, 1, 1, 1, 1), (28, 28, 1, 1, 1, 1), (13, 30, 1, 1, 1, 1), (3, 66, 1, 1, 1, 1), (10, 17, 2, 0, 1, 2),
        ])
    func depthwise3x3MatchesReference(stride: Int, sizes: (Int, Int, Int, Int, Int, Int)) {
        let (h, wd, top, left, bottom, right) = sizes
        let oh = (h + top + bottom - 3) / stride + 1
        let ow = (wd + left + right - 3) / stride + 1
        // One image of 5 channels, and two of 21 (planes split across threads mid-image).
        for (c, batch) in [(5, 1), (21, 2)] {
            let x = values(batch * c * h * wd, seed: 3)
            let w = values(c * 9, seed: 4)
            let bias = values(c, seed: 8)
            let output = Tensor(zeros: [batch, c, oh, ow])
            Convolution.forward(
                input: Tensor(shape: [batch, c, h, wd], scalars: x), weight: Tensor(shape: [c, 1, 3, 3], scalars: w),
                bias: Tensor(shape: [c], scalars: bias),
                geometry: WindowGeometry(kernel: [3, 3], strides: [stride, stride], padsBegin: [top, left], padsEnd: [bottom, right], group: c),
                into: output, activation: .clip(min: 0, max: 0.6), pool: ThreadPool(threads: 2))
            let actual = output.scalars(as: Float.self)
            var clipped = 0
            for plane in 0..<(batch * c) {
                let channel = plane % c
                for i in 0..<oh {
                    for j in 0..<ow {
                        var sum = bias[channel]
                        for a in 0..<3 {
                            for b in 0..<3 {
                                let (yy, xx) = (i * stride - top + a, j * stride - left + b)
                                if yy >= 0 && yy < h && xx >= 0 && xx < wd { sum += x[(plane * h + yy) * wd + xx] * w[channel * 9 + a * 3 + b] }
                            }
                        }
                        let expected = min(max(sum, 0), 0.6)
                        if expected != sum { clipped += 1 }
                        #expect(abs(actual[(plane * oh + i) * ow + j] - expected) < 1e-5, "\(c) channels: plane \(plane) row \(i) column \(j)")
                    }
                }
            }
            #expect(clipped > 0)
            // The same convolution written over its input, where the plane size allows it.
            guard oh == h && ow == wd else { continue }
            let shared = Tensor(shape: [batch, c, h, wd], scalars: x)
            Convolution.forward(
                input: shared, weight: Tensor(shape: [c, 1, 3, 3], scalars: w), bias: Tensor(shape: [c], scalars: bias),
                geometry: WindowGeometry(kernel: [3, 3], strides: [1, 1], padsBegin: [top, left], padsEnd: [bottom, right], group: c),
                into: shared, activation: .clip(min: 0, max: 0.6), pool: ThreadPool(threads: 2))
            #expect(shared.scalars(as: Float.self) == actual, "\(c) channels \(h)x\(wd): in place")
        }
    }

    /// A 5 × 5 depthwise convolution (the general loop) written over its input equals the one
    /// into a tensor of its own.
    @Test func depthwiseInPlaceMatchesTheGeneralLoop() {
        let (batch, c, h, wd) = (2, 7, 9, 11)
        let x = values(batch * c * h * wd, seed: 5)
        let weight = Tensor(shape: [c, 1, 5, 5], scalars: values(c * 25, seed: 6))
        let geometry = WindowGeometry(kernel: [5, 5], padsBegin: [2, 2], padsEnd: [2, 2], group: c)
        let separate = Tensor(zeros: [batch, c, h, wd])
        Convolution.forward(input: Tensor(shape: [batch, c, h, wd], scalars: x), weight: weight, bias: nil, geometry: geometry, into: separate)
        let shared = Tensor(shape: [batch, c, h, wd], scalars: x)
        Convolution.forward(input: shared, weight: weight, bias: nil, geometry: geometry, into: shared, pool: ThreadPool(threads: 2))
        #expect(shared.scalars(as: Float.self) == separate.scalars(as: Float.self))
        #expect(Convolution.depthwiseRunsInPlace(input: [batch, c, h, wd], output: [batch, c, h, wd], weight: [c, 1, 5, 5], group: c))
        #expect(!Convolution.depthwiseRunsInPlace(input: [batch, c, h, wd], output: [batch, c, 5, 6], weight: [c, 1, 5, 5], group: c))
    }

    /// The fused epilogue, `activation(conv + bias + residual)`, on every path — 1×1 and im2col
    /// products (tiled, narrow ones on OpenBLAS, two threads splitting output channels),
    /// Winograd, depthwise, grouped — against the plain convolution followed by separate passes.
    @Test(arguments: [
        (1, 1, 1, 96, 2), (3, 1, 1, 40, 1), (3, 2, 1, 3, 2), (3, 1, 1, 9, 2), (5, 1, 16, 33, 2), (3, 1, 16, 3, 2), (3, 1, 0, 20, 2),
        (3, 1, -1, 12, 2),
    ])
    func epilogueMatchesSeparatePasses(k: Int, stride: Int, channels: Int, size: Int, threads: Int) {
        // channels 0: depthwise on 24 channels; −1: 16 channels in four groups; otherwise `channels` in, 32 out.
        let depthwise = channels == 0
        let groups = depthwise ? 24 : channels == -1 ? 4 : 1
        let (c, m) = depthwise ? (24, 24) : channels == -1 ? (16, 32) : (channels, 32)
        let pad = k / 2
        let out = (size + 2 * pad - k) / stride + 1
        let geometry = WindowGeometry(
            kernel: [k, k], strides: [stride, stride], padsBegin: [pad, pad], padsEnd: [pad, pad], group: groups)
        // One image when tiny, so that two threads split output channels.
        let batch = size <= 3 ? 1 : 2
        let input = Tensor(shape: [batch, c, size, size], scalars: values(batch * c * size * size, seed: 11))
        let weight = Tensor(shape: [m, c / groups, k, k], scalars: values(m * (c / groups) * k * k, seed: 12))
        let bias = Tensor(shape: [m], scalars: values(m, seed: 13))
        let residualValues = values(batch * m * out * out, seed: 14)
        let residual = Tensor(shape: [batch, m, out, out], scalars: residualValues)
        let pool = ThreadPool(threads: threads)
        let plain = Tensor(zeros: [batch, m, out, out])
        Convolution.forward(input: input, weight: weight, bias: bias, geometry: geometry, into: plain, pool: pool)
        let expected = zip(plain.scalars(as: Float.self), residualValues).map { min(max($0 + $1, 0), 6) }
        let fused = Tensor(zeros: [batch, m, out, out])
        Convolution.forward(
            input: input, weight: weight, bias: bias, geometry: geometry, into: fused, residual: residual, activation: .clip(min: 0, max: 6),
            pool: pool)
        let actual = fused.scalars(as: Float.self)
        #expect(expected.contains { $0 == 0 } && expected.contains { $0 > 0 })
        var worst: Float = 0
        for index in expected.indices { worst = max(worst, abs(actual[index] - expected[index]) / (1 + abs(expected[index]))) }
        #expect(worst < 1e-5, "worst relative difference \(worst)")
        if groups == 1 && k == 3 && stride == 1 && c >= 16 {
            let winograd = Tensor(zeros: [batch, m, out, out])
            Convolution.forwardWinograd(
                input: input, transformedWeight: Convolution.winogradFilters(weight), bias: bias, geometry: geometry, into: winograd,
                residual: residual, activation: .clip(min: 0, max: 6), pool: pool)
            let transformed = winograd.scalars(as: Float.self)
            for index in expected.indices { worst = max(worst, abs(transformed[index] - expected[index]) / (1 + abs(expected[index]))) }
            #expect(worst < 1e-5, "Winograd: worst relative difference \(worst)")
        }
    }

    /// One-row products (the matrix–vector path) with every combination of transposes,
    /// alpha and beta, on one and two threads, against the plain sum.
    @Test(arguments: [false, true], [false, true])
    func oneRowProductMatchesReference(transposeA: Bool, transposeB: Bool) {
        let (k, n) = (37, 70)
        let a = values(k, seed: 21)
        let b = values(k * n, seed: 22)
        for threads in [1, 2] {
            var c = values(n, seed: 23)
            let expected = (0..<n).map { column in
                1.5 * (0..<k).reduce(Float(0)) { $0 + a[$1] * b[transposeB ? column * k + $1 : $1 * n + column] } + 0.5 * c[column]
            }
            c.withUnsafeMutableBufferPointer { output in
                GEMM.multiply(
                    m: 1, n: n, k: k, a: a, lda: transposeA ? 1 : k, transposeA: transposeA, b: b, ldb: transposeB ? k : n,
                    transposeB: transposeB, c: output.baseAddress!, ldc: n, alpha: 1.5, beta: 0.5, pool: ThreadPool(threads: threads))
            }
            for index in 0..<n { #expect(abs(c[index] - expected[index]) < 1e-4, "threads \(threads) column \(index)") }
        }
    }

    /// The Winograd path (3×3, stride 1, ≥ 16 channels, ≥ 784 outputs) against the direct sum,
    /// on odd sizes (edge tiles), with and without padding, with a bias, on one and two threads.
    @Test(arguments: [(29, 31, 1, 1), (31, 30, 0, 1), (33, 29, 1, 2)])
    func winogradMatchesReference(h: Int, wd: Int, pad: Int, threads: Int) {
        let (c, m) = (17, 20)
        let geometry = WindowGeometry(kernel: [3, 3], padsBegin: [pad, pad], padsEnd: [pad, pad])
        let oh = h + 2 * pad - 2
        let ow = wd + 2 * pad - 2
        #expect(Convolution.winogradApplies(geometry.promoted, inDepth: 1, channels: c, outChannels: m, outSpatial: oh * ow))
        let x = values(c * h * wd, seed: 5)
        let w = values(m * c * 9, seed: 6)
        let bias = values(m, seed: 7)
        let expected = referenceConv(x, w, c: c, h: h, wd: wd, m: m, k: 3, stride: 1, pad: pad, group: 1)
        let output = Tensor(zeros: [1, m, oh, ow])
        Convolution.forward(
            input: Tensor(shape: [1, c, h, wd], scalars: x), weight: Tensor(shape: [m, c, 3, 3], scalars: w),
            bias: Tensor(shape: [m], scalars: bias), geometry: geometry, into: output, pool: ThreadPool(threads: threads))
        let actual = output.scalars(as: Float.self)
        var worst: Float = 0
        for index in expected.indices {
            worst = max(worst, abs(actual[index] - expected[index] - bias[index / (oh * ow)]) / (1 + abs(expected[index])))
        }
        #expect(worst < 1e-5, "worst relative difference \(worst)")
    }

    @Test func broadcastAddAlongChannels() {
        let a = Tensor(shape: [2, 3, 2], scalars: values(12, seed: 3))
        let b = Tensor(shape: [3, 1], scalars: [10, 20, 30] as [Float])
        let out = Tensor(zeros: [2, 3, 2])
        BinaryOperator.add.apply(a, b, into: out)
        let x = a.scalars(as: Float.self)
        let y = out.scalars(as: Float.self)
        for index in 0..<12 { #expect(y[index] == x[index] + [10, 20, 30][(index / 2) % 3]) }
    }

    @Test func integerDivisionByZeroDoesNotTrap() {
        let out = Tensor(zeros: [2], dtype: .int32)
        BinaryOperator.divide.apply(Tensor(shape: [2], scalars: [Int32.min, 7]), Tensor(shape: [2], scalars: [-1, 0] as [Int32]), into: out)
        #expect(out.scalars(as: Int32.self) == [Int32.min, 0])
    }

    @Test func transposeMovesElements() {
        let input = Tensor(shape: [2, 3, 4], scalars: (0..<24).map(Int64.init))
        let output = Tensor(zeros: [4, 2, 3], dtype: .int64)
        Layout.transpose(input, permutation: [2, 0, 1], into: output)
        let y = output.scalars(as: Int64.self)
        #expect(y[0..<6] == [0, 4, 8, 12, 16, 20])
    }

    @Test func gatherRejectsOutOfRangeIndex() {
        let data = Tensor(shape: [3], scalars: [1, 2, 3] as [Float])
        #expect(throws: TensorError.self) { try Layout.gather(data, indices: [3], axis: 0, into: Tensor(zeros: [1])) }
    }

    @Test func memoryArenaGEMMIdentity() {
        let a = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4] as [Float])
        let identity = Tensor(shape: [2, 2], scalars: [1, 0, 0, 1] as [Float])
        #expect(a.matmul(identity).scalars(as: Float.self) == [1, 2, 3, 4])
    }
}
