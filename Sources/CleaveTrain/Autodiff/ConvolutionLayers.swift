import CleaveONNX
import CleaveSupport
import CleaveTensor

/// A 2-D convolution (ONNX `Conv`, square kernel, optional groups) trained through im2col and GEMM.
///
/// The whole batch is unfolded into one column matrix so that forward and both
/// backward products are single large GEMMs per group.
public final class Conv2D: Layer {
    public let name: String
    public let inChannels: Int
    public let outChannels: Int
    public let window: Window2D
    public let groups: Int
    public let weight: Parameter
    public let bias: Parameter
    private let pool: ThreadPool
    private var columns: [Float] = []
    private var inputShape: [Int] = []

    /// A convolution with He-normal weights drawn from `generator` and zero bias.
    public init(
        _ name: String, _ inChannels: Int, _ outChannels: Int, window: Window2D, groups: Int = 1,
        generator: inout SeededGenerator, pool: ThreadPool = ThreadPool()
    ) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "\(name): channels must divide by the group count")
        self.name = name
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.window = window
        self.groups = groups
        self.pool = pool
        let fanIn = inChannels / groups * window.kernel * window.kernel
        weight = Parameter(
            "\(name).weight", shape: [outChannels, inChannels / groups, window.kernel, window.kernel],
            value: heNormal(count: outChannels * fanIn, fanIn: fanIn, &generator), decays: true)
        bias = Parameter("\(name).bias", shape: [outChannels], value: [Float](repeating: 0, count: outChannels), decays: false)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func outputShape(_ input: [Int]) -> [Int] { [outChannels, window.outputSize(input[1]), window.outputSize(input[2])] }

    public func multiplyAdds(_ input: [Int]) -> Int {
        outputShape(input).reduce(1, *) * inChannels / groups * window.kernel * window.kernel
    }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        precondition(input.shape.count == 4 && input.shape[1] == inChannels, "\(name): expected [N, \(inChannels), H, W], got \(input.shape)")
        let (batch, height, width) = (input.shape[0], input.shape[2], input.shape[3])
        let (outHeight, outWidth) = (window.outputSize(height), window.outputSize(width))
        let plane = outHeight * outWidth
        let k2 = window.kernel * window.kernel
        let groupRows = inChannels / groups * k2
        let groupOut = outChannels / groups
        var cols = [Float](repeating: 0, count: inChannels * k2 * batch * plane)
        var product = [Float](repeating: 0, count: outChannels * batch * plane)
        input.data.withUnsafeBufferPointer { x in
            cols.withUnsafeMutableBufferPointer { c in
                Im2Col.unfold(
                    x.baseAddress!, batch: batch, channels: inChannels, height: height, width: width, window: window, into: c.baseAddress!,
                    pool: pool)
            }
        }
        weight.value.withUnsafeBufferPointer { w in
            cols.withUnsafeBufferPointer { c in
                product.withUnsafeMutableBufferPointer { y in
                    for group in 0..<groups {
                        GEMM.multiply(
                            m: groupOut, n: batch * plane, k: groupRows,
                            a: w.baseAddress! + group * groupOut * groupRows, lda: groupRows,
                            b: c.baseAddress! + group * groupRows * batch * plane, ldb: batch * plane,
                            c: y.baseAddress! + group * groupOut * batch * plane, ldc: batch * plane)
                    }
                }
            }
        }
        var output = FloatTensor(shape: [batch, outChannels, outHeight, outWidth])
        product.withUnsafeBufferPointer { y in
            output.data.withUnsafeMutableBufferPointer { o in
                Im2Col.batchFirst(y.baseAddress!, batch: batch, channels: outChannels, plane: plane, into: o.baseAddress!)
                for sample in 0..<batch {
                    for channel in 0..<outChannels {
                        let row = o.baseAddress! + (sample * outChannels + channel) * plane
                        let b = bias.value[channel]
                        for index in 0..<plane { row[index] += b }
                    }
                }
            }
        }
        if mode == .training {
            columns = cols
            inputShape = input.shape
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let (batch, height, width) = (inputShape[0], inputShape[2], inputShape[3])
        let plane = gradient.shape[2] * gradient.shape[3]
        let k2 = window.kernel * window.kernel
        let groupRows = inChannels / groups * k2
        let groupOut = outChannels / groups
        let n = batch * plane
        var dy = [Float](repeating: 0, count: outChannels * n)
        gradient.data.withUnsafeBufferPointer { g in
            dy.withUnsafeMutableBufferPointer { d in
                Im2Col.channelsFirst(g.baseAddress!, batch: batch, channels: outChannels, plane: plane, into: d.baseAddress!)
            }
        }
        for channel in 0..<outChannels {
            var sum: Float = 0
            for index in (channel * n)..<((channel + 1) * n) { sum += dy[index] }
            bias.gradient[channel] += sum
        }
        var dcols = [Float](repeating: 0, count: inChannels * k2 * n)
        dy.withUnsafeBufferPointer { d in
            columns.withUnsafeBufferPointer { c in
                weight.gradient.withUnsafeMutableBufferPointer { dw in
                    weight.value.withUnsafeBufferPointer { w in
                        dcols.withUnsafeMutableBufferPointer { dc in
                            for group in 0..<groups {
                                GEMM.multiply(
                                    m: groupOut, n: groupRows, k: n,
                                    a: d.baseAddress! + group * groupOut * n, lda: n,
                                    b: c.baseAddress! + group * groupRows * n, ldb: n, transposeB: true,
                                    c: dw.baseAddress! + group * groupOut * groupRows, ldc: groupRows, beta: 1)
                                GEMM.multiply(
                                    m: groupRows, n: n, k: groupOut,
                                    a: w.baseAddress! + group * groupOut * groupRows, lda: groupRows, transposeA: true,
                                    b: d.baseAddress! + group * groupOut * n, ldb: n,
                                    c: dc.baseAddress! + group * groupRows * n, ldc: n)
                            }
                        }
                    }
                }
            }
        }
        var result = FloatTensor(shape: inputShape)
        dcols.withUnsafeBufferPointer { dc in
            result.data.withUnsafeMutableBufferPointer { dx in
                Im2Col.fold(
                    dc.baseAddress!, batch: batch, channels: inChannels, height: height, width: width, window: window, into: dx.baseAddress!,
                    pool: pool)
            }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        let inputs = [input, weight.export(to: &builder), bias.export(to: &builder)]
        return builder.node("Conv", inputs, [name], attributes: window.attributes.merging(["group": .int(groups)]) { $1 })
    }
}

/// A 2-D transposed convolution (ONNX `ConvTranspose`, one group): the decoder's upsampling step.
///
/// Its forward pass is a convolution's input gradient: GEMM into columns, then fold.
public final class ConvTranspose2D: Layer {
    public let name: String
    public let inChannels: Int
    public let outChannels: Int
    public let window: Window2D
    /// Extra rows and columns at the end of the output (ONNX `output_padding`).
    public let outputPadding: Int
    public let weight: Parameter
    public let bias: Parameter
    private let pool: ThreadPool
    private var input = FloatTensor(shape: [0])

    /// A transposed convolution with He-normal weights and zero bias.
    public init(
        _ name: String, _ inChannels: Int, _ outChannels: Int, window: Window2D, outputPadding: Int = 0,
        generator: inout SeededGenerator, pool: ThreadPool = ThreadPool()
    ) {
        self.name = name
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.window = window
        self.outputPadding = outputPadding
        self.pool = pool
        let k2 = window.kernel * window.kernel
        let fanIn = inChannels * k2 / (window.stride * window.stride)
        weight = Parameter(
            "\(name).weight", shape: [inChannels, outChannels, window.kernel, window.kernel],
            value: heNormal(count: inChannels * outChannels * k2, fanIn: max(fanIn, 1), &generator), decays: true)
        bias = Parameter("\(name).bias", shape: [outChannels], value: [Float](repeating: 0, count: outChannels), decays: false)
    }

    public var parameters: [Parameter] { [weight, bias] }

    func outputSize(_ size: Int) -> Int { (size - 1) * window.stride - 2 * window.padding + window.kernel + outputPadding }

    public func outputShape(_ input: [Int]) -> [Int] { [outChannels, outputSize(input[1]), outputSize(input[2])] }

    public func multiplyAdds(_ input: [Int]) -> Int { input[1] * input[2] * inChannels * outChannels * window.kernel * window.kernel }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        precondition(input.shape.count == 4 && input.shape[1] == inChannels, "\(name): expected [N, \(inChannels), H, W], got \(input.shape)")
        let (batch, height, width) = (input.shape[0], input.shape[2], input.shape[3])
        let (outHeight, outWidth) = (outputSize(height), outputSize(width))
        precondition(window.outputSize(outHeight) == height && window.outputSize(outWidth) == width, "\(name): inconsistent geometry")
        let n = batch * height * width
        let rows = outChannels * window.kernel * window.kernel
        var x = [Float](repeating: 0, count: inChannels * n)
        var cols = [Float](repeating: 0, count: rows * n)
        var output = FloatTensor(shape: [batch, outChannels, outHeight, outWidth])
        input.data.withUnsafeBufferPointer { source in
            x.withUnsafeMutableBufferPointer { xp in
                Im2Col.channelsFirst(source.baseAddress!, batch: batch, channels: inChannels, plane: height * width, into: xp.baseAddress!)
            }
        }
        weight.value.withUnsafeBufferPointer { w in
            x.withUnsafeBufferPointer { xp in
                cols.withUnsafeMutableBufferPointer { c in
                    GEMM.multiply(
                        m: rows, n: n, k: inChannels, a: w.baseAddress!, lda: rows, transposeA: true, b: xp.baseAddress!, ldb: n,
                        c: c.baseAddress!, ldc: n)
                }
            }
        }
        cols.withUnsafeBufferPointer { c in
            output.data.withUnsafeMutableBufferPointer { o in
                Im2Col.fold(
                    c.baseAddress!, batch: batch, channels: outChannels, height: outHeight, width: outWidth, window: window,
                    into: o.baseAddress!, pool: pool)
            }
        }
        let plane = outHeight * outWidth
        for sample in 0..<batch {
            for channel in 0..<outChannels {
                let base = (sample * outChannels + channel) * plane
                for index in base..<(base + plane) { output.data[index] += bias.value[channel] }
            }
        }
        if mode == .training { self.input = input }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let (batch, height, width) = (input.shape[0], input.shape[2], input.shape[3])
        let (outHeight, outWidth) = (gradient.shape[2], gradient.shape[3])
        let n = batch * height * width
        let rows = outChannels * window.kernel * window.kernel
        let plane = outHeight * outWidth
        for sample in 0..<batch {
            for channel in 0..<outChannels {
                let base = (sample * outChannels + channel) * plane
                var sum: Float = 0
                for index in base..<(base + plane) { sum += gradient.data[index] }
                bias.gradient[channel] += sum
            }
        }
        var dcols = [Float](repeating: 0, count: rows * n)
        var x = [Float](repeating: 0, count: inChannels * n)
        var dx = [Float](repeating: 0, count: inChannels * n)
        gradient.data.withUnsafeBufferPointer { g in
            dcols.withUnsafeMutableBufferPointer { dc in
                Im2Col.unfold(
                    g.baseAddress!, batch: batch, channels: outChannels, height: outHeight, width: outWidth, window: window,
                    into: dc.baseAddress!, pool: pool)
            }
        }
        input.data.withUnsafeBufferPointer { source in
            x.withUnsafeMutableBufferPointer { xp in
                Im2Col.channelsFirst(source.baseAddress!, batch: batch, channels: inChannels, plane: height * width, into: xp.baseAddress!)
            }
        }
        dcols.withUnsafeBufferPointer { dc in
            x.withUnsafeBufferPointer { xp in
                weight.gradient.withUnsafeMutableBufferPointer { dw in
                    GEMM.multiply(
                        m: inChannels, n: rows, k: n, a: xp.baseAddress!, lda: n, b: dc.baseAddress!, ldb: n, transposeB: true,
                        c: dw.baseAddress!, ldc: rows, beta: 1)
                }
            }
            weight.value.withUnsafeBufferPointer { w in
                dx.withUnsafeMutableBufferPointer { d in
                    GEMM.multiply(m: inChannels, n: n, k: rows, a: w.baseAddress!, lda: rows, b: dc.baseAddress!, ldb: n, c: d.baseAddress!, ldc: n)
                }
            }
        }
        var result = FloatTensor(shape: input.shape)
        dx.withUnsafeBufferPointer { d in
            result.data.withUnsafeMutableBufferPointer { r in
                Im2Col.batchFirst(d.baseAddress!, batch: batch, channels: inChannels, plane: height * width, into: r.baseAddress!)
            }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        let inputs = [input, weight.export(to: &builder), bias.export(to: &builder)]
        let attributes = window.attributes.merging(["output_padding": .ints([outputPadding, outputPadding])]) { $1 }
        return builder.node("ConvTranspose", inputs, [name], attributes: attributes)
    }
}

/// `count` He-normal values for a layer with `fanIn` inputs per output.
func heNormal(count: Int, fanIn: Int, _ generator: inout SeededGenerator) -> [Float] {
    let scale = (2.0 / Double(fanIn)).squareRoot()
    return (0..<count).map { _ in Float(generator.normal() * scale) }
}
