import CleaveSupport
import CleaveTrain
import Testing

/// Finite-difference checks of every layer's backward pass.
///
/// The loss is `Σ r·f(x)` for a fixed random `r`, evaluated in double precision
/// from the float32 forward pass; central differences with step `h` are compared
/// with the analytic gradient for the input and for every parameter element.
@Suite struct GradientCheckTests {
    struct Checker {
        var generator = SeededGenerator(seed: 7)
        var step: Float = 1e-2

        mutating func random(_ shape: [Int], awayFromZero: Bool = false) -> FloatTensor {
            let count = shape.reduce(1, *)
            let values = (0..<count).map { _ -> Float in
                let value = Float(generator.normal())
                return awayFromZero ? (value < 0 ? value - 0.2 : value + 0.2) : value
            }
            return FloatTensor(shape: shape, data: values)
        }

        /// Worst relative error between analytic and numeric gradients over input and parameters.
        mutating func worstError(_ layer: any Layer, inputShape: [Int], distinct: Bool = false, awayFromZero: Bool = false) -> Double {
            var input = random(inputShape, awayFromZero: awayFromZero)
            if distinct {
                let order = (0..<input.count).shuffled(using: &generator)
                for (rank, index) in order.enumerated() { input.data[index] = Float(rank) * 0.05 - Float(input.count) * 0.025 }
            }
            let output = layer.forward(input, mode: .training)
            let weights = random(output.shape)
            for parameter in layer.parameters { parameter.zeroGradient() }
            let inputGradient = layer.backward(weights)

            func loss(_ x: FloatTensor) -> Double {
                let y = layer.forward(x, mode: .training)
                return zip(y.data, weights.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            var worst = 0.0
            func compare(_ analytic: Float, _ numeric: Double) {
                let error = abs(Double(analytic) - numeric) / max(1, abs(numeric), abs(Double(analytic)))
                worst = max(worst, error)
            }
            for index in stride(from: 0, to: input.count, by: max(1, input.count / 40)) {
                var plus = input
                var minus = input
                plus.data[index] += step
                minus.data[index] -= step
                compare(inputGradient.data[index], (loss(plus) - loss(minus)) / Double(2 * step))
            }
            for parameter in layer.parameters {
                let analytic = parameter.gradient
                for index in stride(from: 0, to: parameter.value.count, by: max(1, parameter.value.count / 20)) {
                    let original = parameter.value[index]
                    parameter.value[index] = original + step
                    let up = loss(input)
                    parameter.value[index] = original - step
                    let down = loss(input)
                    parameter.value[index] = original
                    compare(analytic[index], (up - down) / Double(2 * step))
                }
            }
            return worst
        }
    }

    let tolerance = 1e-2

    @Test func convolution() {
        var checker = Checker()
        let layer = Conv2D("conv", 3, 4, window: Window2D(kernel: 3, padding: 1), generator: &checker.generator)
        #expect(checker.worstError(layer, inputShape: [2, 3, 5, 5]) < tolerance)
    }

    @Test func stridedGroupedConvolution() {
        var checker = Checker()
        let layer = Conv2D("conv", 4, 6, window: Window2D(kernel: 3, stride: 2, padding: 1), groups: 2, generator: &checker.generator)
        #expect(checker.worstError(layer, inputShape: [2, 4, 6, 6]) < tolerance)
    }

    @Test func depthwiseConvolution() {
        var checker = Checker()
        let layer = Conv2D("dw", 3, 3, window: Window2D(kernel: 3, padding: 1), groups: 3, generator: &checker.generator)
        #expect(checker.worstError(layer, inputShape: [2, 3, 4, 4]) < tolerance)
    }

    @Test func transposedConvolution() {
        var checker = Checker()
        let layer = ConvTranspose2D("up", 2, 3, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &checker.generator)
        #expect(checker.worstError(layer, inputShape: [2, 2, 4, 4]) < tolerance)
        let padded = ConvTranspose2D("up2", 2, 3, window: Window2D(kernel: 3, stride: 2, padding: 1), outputPadding: 1, generator: &checker.generator)
        #expect(checker.worstError(padded, inputShape: [1, 2, 3, 3]) < tolerance)
    }

    @Test func dense() {
        var checker = Checker()
        let layer = Dense("fc", 7, 5, generator: &checker.generator)
        #expect(checker.worstError(layer, inputShape: [3, 7]) < tolerance)
    }

    @Test func batchNormalizationInTrainingMode() {
        var checker = Checker()
        let layer = BatchNorm("bn", 3)
        layer.scale.value = [0.5, 1.5, -1]
        layer.shift.value = [0.1, -0.2, 0.3]
        #expect(checker.worstError(layer, inputShape: [4, 3, 3, 3]) < tolerance)
        #expect(checker.worstError(BatchNorm("bn1d", 5), inputShape: [6, 5]) < tolerance)
    }

    @Test func rectifiersAwayFromTheirKinks() {
        var checker = Checker()
        #expect(checker.worstError(Rectifier("relu"), inputShape: [2, 3, 4], awayFromZero: true) < tolerance)
        let relu6 = Rectifier("relu6", ceiling: 6)
        _ = relu6.forward(FloatTensor(shape: [1, 4], data: [-1, 3, 7, 5.5]), mode: .training)
        #expect(relu6.backward(FloatTensor(shape: [1, 4], data: [1, 1, 1, 1])).data == [0, 1, 0, 1])
        #expect(checker.worstError(relu6, inputShape: [2, 3, 4], awayFromZero: true) < tolerance)
    }

    @Test func pooling() {
        var checker = Checker()
        #expect(checker.worstError(MaxPool2D("max", kernel: 2), inputShape: [2, 2, 4, 4], distinct: true) < tolerance)
        #expect(checker.worstError(MaxPool2D("max3", kernel: 3, stride: 2), inputShape: [1, 2, 5, 5], distinct: true) < tolerance)
        #expect(checker.worstError(AveragePool2D("avg", kernel: 2), inputShape: [2, 2, 4, 4]) < tolerance)
        #expect(checker.worstError(GlobalAveragePool("gap"), inputShape: [2, 3, 3, 3]) < tolerance)
    }

    @Test func flattenAndResidualAdd() {
        var checker = Checker()
        #expect(checker.worstError(Flatten("flat"), inputShape: [2, 3, 2, 2]) < tolerance)
        let body = Sequential("body", [Conv2D("c", 2, 2, window: Window2D(kernel: 3, padding: 1), generator: &checker.generator), BatchNorm("b", 2)])
        #expect(checker.worstError(Residual("res", body), inputShape: [3, 2, 4, 4]) < tolerance)
    }

    @Test func wholeNetwork() {
        var checker = Checker()
        checker.step = 2e-3
        let network = Sequential(
            "net",
            [
                Conv2D("c1", 1, 4, window: Window2D(kernel: 3, padding: 1), generator: &checker.generator), BatchNorm("bn", 4),
                AveragePool2D("pool", kernel: 2),
                Conv2D("c2", 4, 2, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &checker.generator),
                ConvTranspose2D("up", 2, 3, window: Window2D(kernel: 3, stride: 2, padding: 1), outputPadding: 1, generator: &checker.generator),
                Flatten("flat"), Dense("fc", 48, 3, generator: &checker.generator),
            ])
        #expect(checker.worstError(network, inputShape: [3, 1, 8, 8]) < tolerance)
    }

    @Test func losses() {
        var checker = Checker()
        let logits = checker.random([4, 5])
        let labels = [0, 3, 4, 1]
        let (_, gradient) = Loss.softmaxCrossEntropy(logits, labels: labels)
        let target = checker.random([4, 5])
        let (_, squaredGradient) = Loss.meanSquaredError(logits, target: target)
        let (_, distillationGradient) = Loss.distillation(logits, teacher: target, temperature: 3)
        for index in 0..<logits.count {
            var plus = logits
            var minus = logits
            plus.data[index] += 1e-2
            minus.data[index] -= 1e-2
            let numeric = (Loss.softmaxCrossEntropy(plus, labels: labels).loss - Loss.softmaxCrossEntropy(minus, labels: labels).loss) / 2e-2
            #expect(abs(numeric - Double(gradient.data[index])) < 1e-3)
            let numericSquared = (Loss.meanSquaredError(plus, target: target).loss - Loss.meanSquaredError(minus, target: target).loss) / 2e-2
            #expect(abs(numericSquared - Double(squaredGradient.data[index])) < 1e-3)
            let numericDistillation =
                (Loss.distillation(plus, teacher: target, temperature: 3).loss - Loss.distillation(minus, teacher: target, temperature: 3).loss)
                / 2e-2
            #expect(abs(numericDistillation - Double(distillationGradient.data[index])) < 1e-3)
        }
        #expect(Loss.distillation(target, teacher: target, temperature: 3).loss < 1e-12)
    }
}
