import CleaveONNX
import CleaveSupport
import CleaveTensor

/// A fully connected layer `y = x·Wᵀ + b` (ONNX `Gemm` with `transB = 1`) on `[N, in]` inputs.
public final class Dense: Layer {
    public let name: String
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter
    private var input = FloatTensor(shape: [0])

    /// A layer with He-normal weights and zero bias.
    public init(_ name: String, _ inFeatures: Int, _ outFeatures: Int, generator: inout SeededGenerator) {
        self.name = name
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter(
            "\(name).weight", shape: [outFeatures, inFeatures], value: heNormal(count: inFeatures * outFeatures, fanIn: inFeatures, &generator),
            decays: true)
        bias = Parameter("\(name).bias", shape: [outFeatures], value: [Float](repeating: 0, count: outFeatures), decays: false)
    }

    public var parameters: [Parameter] { [weight, bias] }
    public func outputShape(_ input: [Int]) -> [Int] { [outFeatures] }
    public func multiplyAdds(_ input: [Int]) -> Int { inFeatures * outFeatures }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        precondition(input.shape.count == 2 && input.shape[1] == inFeatures, "\(name): expected [N, \(inFeatures)], got \(input.shape)")
        let batch = input.shape[0]
        var output = FloatTensor(shape: [batch, outFeatures])
        for sample in 0..<batch {
            for feature in 0..<outFeatures { output.data[sample * outFeatures + feature] = bias.value[feature] }
        }
        input.data.withUnsafeBufferPointer { x in
            weight.value.withUnsafeBufferPointer { w in
                output.data.withUnsafeMutableBufferPointer { y in
                    GEMM.multiply(
                        m: batch, n: outFeatures, k: inFeatures, a: x.baseAddress!, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures,
                        transposeB: true, c: y.baseAddress!, ldc: outFeatures, beta: 1)
                }
            }
        }
        if mode == .training { self.input = input }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let batch = gradient.shape[0]
        for sample in 0..<batch {
            for feature in 0..<outFeatures { bias.gradient[feature] += gradient.data[sample * outFeatures + feature] }
        }
        var result = FloatTensor(shape: [batch, inFeatures])
        gradient.data.withUnsafeBufferPointer { dy in
            input.data.withUnsafeBufferPointer { x in
                weight.gradient.withUnsafeMutableBufferPointer { dw in
                    GEMM.multiply(
                        m: outFeatures, n: inFeatures, k: batch, a: dy.baseAddress!, lda: outFeatures, transposeA: true, b: x.baseAddress!,
                        ldb: inFeatures, c: dw.baseAddress!, ldc: inFeatures, beta: 1)
                }
            }
            weight.value.withUnsafeBufferPointer { w in
                result.data.withUnsafeMutableBufferPointer { dx in
                    GEMM.multiply(
                        m: batch, n: inFeatures, k: outFeatures, a: dy.baseAddress!, lda: outFeatures, b: w.baseAddress!, ldb: inFeatures,
                        c: dx.baseAddress!, ldc: inFeatures)
                }
            }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        let inputs = [input, weight.export(to: &builder), bias.export(to: &builder)]
        return builder.node("Gemm", inputs, [name], attributes: ["transB": .int(1)])
    }
}

/// Batch normalization over axis 1 (ONNX `BatchNormalization`): batch statistics while
/// training, running statistics (which training updates) for inference and export.
public final class BatchNorm: Layer {
    public let name: String
    public let channels: Int
    /// Weight of the old running statistic in each update (ONNX `momentum`).
    public let momentum: Float
    public let epsilon: Float
    public let scale: Parameter
    public let shift: Parameter
    public let runningMean: Parameter
    public let runningVariance: Parameter
    private var normalized: [Float] = []
    private var inverseDeviation: [Float] = []
    private var shape: [Int] = []
    private let pool = ThreadPool()

    /// A normalization with scale 1, shift 0, running mean 0 and variance 1.
    public init(_ name: String, _ channels: Int, momentum: Float = 0.9, epsilon: Float = 1e-5) {
        self.name = name
        self.channels = channels
        self.momentum = momentum
        self.epsilon = epsilon
        scale = Parameter("\(name).scale", shape: [channels], value: [Float](repeating: 1, count: channels), decays: false)
        shift = Parameter("\(name).shift", shape: [channels], value: [Float](repeating: 0, count: channels), decays: false)
        runningMean = Parameter("\(name).mean", shape: [channels], value: [Float](repeating: 0, count: channels), decays: false)
        runningVariance = Parameter("\(name).variance", shape: [channels], value: [Float](repeating: 1, count: channels), decays: false)
    }

    public var parameters: [Parameter] { [scale, shift] }
    public var buffers: [Parameter] { [runningMean, runningVariance] }
    public func multiplyAdds(_ input: [Int]) -> Int { input.reduce(1, *) }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        precondition(input.shape.count >= 2 && input.shape[1] == channels, "\(name): expected \(channels) channels, got \(input.shape)")
        let batch = input.shape[0]
        let channels = channels
        let plane = input.shape.dropFirst(2).reduce(1, *)
        var output = FloatTensor(shape: input.shape)
        if mode == .inference {
            for channel in 0..<channels {
                let a = scale.value[channel] / (runningVariance.value[channel] + epsilon).squareRoot()
                let b = shift.value[channel] - runningMean.value[channel] * a
                for sample in 0..<batch {
                    let base = (sample * channels + channel) * plane
                    for index in base..<(base + plane) { output.data[index] = input.data[index] * a + b }
                }
            }
            return output
        }
        let m = Double(batch * plane)
        normalized = [Float](repeating: 0, count: input.count)
        inverseDeviation = [Float](repeating: 0, count: channels)
        shape = input.shape
        var means = [Double](repeating: 0, count: channels)
        var variances = [Double](repeating: 0, count: channels)
        let epsilon = Double(epsilon)
        input.data.withUnsafeBufferPointer { x in
            output.data.withUnsafeMutableBufferPointer { y in
                normalized.withUnsafeMutableBufferPointer { hat in
                    inverseDeviation.withUnsafeMutableBufferPointer { inverse in
                        means.withUnsafeMutableBufferPointer { means in
                            variances.withUnsafeMutableBufferPointer { variances in
                                let (gamma, beta) = (scale.value, shift.value)
                                pool.parallelFor(channels) { range in
                                    for channel in range {
                                        var sum = 0.0
                                        var squares = 0.0
                                        for sample in 0..<batch {
                                            let base = (sample * channels + channel) * plane
                                            var partial: Float = 0
                                            var partialSquares: Float = 0
                                            for index in base..<(base + plane) {
                                                partial += x[index]
                                                partialSquares += x[index] * x[index]
                                            }
                                            sum += Double(partial)
                                            squares += Double(partialSquares)
                                        }
                                        let mean = sum / m
                                        let variance = max(squares / m - mean * mean, 0)
                                        means[channel] = mean
                                        variances[channel] = variance
                                        let deviation = Float(1 / (variance + epsilon).squareRoot())
                                        inverse[channel] = deviation
                                        let mu = Float(mean)
                                        for sample in 0..<batch {
                                            let base = (sample * channels + channel) * plane
                                            for index in base..<(base + plane) {
                                                let value = (x[index] - mu) * deviation
                                                hat[index] = value
                                                y[index] = gamma[channel] * value + beta[channel]
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for channel in 0..<channels {
            let unbiased = m > 1 ? variances[channel] * m / (m - 1) : variances[channel]
            runningMean.value[channel] = momentum * runningMean.value[channel] + (1 - momentum) * Float(means[channel])
            runningVariance.value[channel] = momentum * runningVariance.value[channel] + (1 - momentum) * Float(unbiased)
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let batch = shape[0]
        let channels = channels
        let plane = shape.dropFirst(2).reduce(1, *)
        let m = Float(batch * plane)
        var result = FloatTensor(shape: shape)
        var sums = [Float](repeating: 0, count: channels)
        var products = [Float](repeating: 0, count: channels)
        let gamma = scale.value
        gradient.data.withUnsafeBufferPointer { dy in
            normalized.withUnsafeBufferPointer { hat in
                inverseDeviation.withUnsafeBufferPointer { inverse in
                    result.data.withUnsafeMutableBufferPointer { dx in
                        sums.withUnsafeMutableBufferPointer { sums in
                            products.withUnsafeMutableBufferPointer { products in
                                pool.parallelFor(channels) { range in
                                    for channel in range {
                                        var sumGradient: Float = 0
                                        var sumProduct: Float = 0
                                        for sample in 0..<batch {
                                            let base = (sample * channels + channel) * plane
                                            for index in base..<(base + plane) {
                                                sumGradient += dy[index]
                                                sumProduct += dy[index] * hat[index]
                                            }
                                        }
                                        sums[channel] = sumGradient
                                        products[channel] = sumProduct
                                        let factor = gamma[channel] * inverse[channel] / m
                                        for sample in 0..<batch {
                                            let base = (sample * channels + channel) * plane
                                            for index in base..<(base + plane) {
                                                dx[index] = factor * (m * dy[index] - sumGradient - hat[index] * sumProduct)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for channel in 0..<channels {
            shift.gradient[channel] += sums[channel]
            scale.gradient[channel] += products[channel]
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        let inputs = [input] + [scale, shift, runningMean, runningVariance].map { $0.export(to: &builder) }
        return builder.node(
            "BatchNormalization", inputs, [name],
            attributes: ["epsilon": .float(epsilon), "momentum": .float(momentum)])
    }
}
