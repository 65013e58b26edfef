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
