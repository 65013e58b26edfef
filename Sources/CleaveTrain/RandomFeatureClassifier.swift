import CleaveDatasets
import CleaveONNX
import CleaveSupport
import CleaveTensor
import Foundation

/// A split CNN for Fashion-MNIST whose convolutions keep their seeded random
/// initialization and whose classifier is fitted in closed form (ridge regression
/// on the tail's features).
///
/// It is not BottleFit: it exists so that the split-inference path can be
/// exercised with a model that classifies far above chance after a
/// few seconds of fitting (83% with a 4×7×7 bottleneck), until the trained bottleneck models of the training
/// recipe replace it.
public struct RandomFeatureClassifier {
    /// Channels of the bottleneck tensor `[N, C, 7, 7]`.
    public let bottleneckChannels: Int
    public let seed: UInt64
    /// Channels of the tail's random convolution (the classifier sees 49× this many features).
    public let tailChannels = 24
    /// Ridge penalty relative to the mean diagonal of XᵀX.
    public let ridge: Double = 1e-3

    public init(bottleneckChannels: Int, seed: UInt64) throws {
        guard (1...64).contains(bottleneckChannels) else {
            throw TrainingError(description: "bottleneck channels must be between 1 and 64, got \(bottleneckChannels)")
        }
        self.bottleneckChannels = bottleneckChannels
        self.seed = seed
    }

    /// Fits the classifier on `train` and returns the serialized full model.
    /// `progress` receives (samples done, total) while features are computed.
    public func fit(train: FashionMNIST, threads: Int, progress: (Int, Int) -> Void = { _, _ in }) throws -> Data {
        var generator = SeededGenerator(seed: seed)
        let conv1 = heWeights([16, 1, 3, 3], &generator)
        let conv2 = heWeights([bottleneckChannels, 16, 3, 3], &generator)
        let conv3 = heWeights([tailChannels, bottleneckChannels, 3, 3], &generator)
        let features = try makeModel(conv1: conv1, conv2: conv2, conv3: conv3, classifier: nil)
        let session = InferenceSession(model: try Model(serialized: features), threads: threads)

        let dimension = tailChannels * 49 + 1
        var gram = [Float](repeating: 0, count: dimension * dimension)
        var targets = [Float](repeating: 0, count: dimension * 10)
        let batch = 500
        for start in stride(from: 0, to: train.count, by: batch) {
            let count = min(batch, train.count - start)
            let images = Tensor(shape: [count, 1, 28, 28], scalars: train.pixels[(start * 784)..<((start + count) * 784)].map { Float($0) / 255 })
            let rows = try session.run(["image": images])["features"]!.scalars(as: Float.self)
            var x = [Float](repeating: 1, count: count * dimension)
            var y = [Float](repeating: 0, count: count * 10)
            for row in 0..<count {
                for column in 0..<(dimension - 1) { x[row * dimension + column] = rows[row * (dimension - 1) + column] }
                y[row * 10 + Int(train.labels[start + row])] = 1
            }
            x.withUnsafeBufferPointer { xp in
                gram.withUnsafeMutableBufferPointer { gp in
                    GEMM.multiply(
                        m: dimension, n: dimension, k: count, a: xp.baseAddress!, lda: dimension, transposeA: true,
                        b: xp.baseAddress!, ldb: dimension, c: gp.baseAddress!, ldc: dimension, beta: 1)
                }
                y.withUnsafeBufferPointer { yp in
                    targets.withUnsafeMutableBufferPointer { tp in
                        GEMM.multiply(
                            m: dimension, n: 10, k: count, a: xp.baseAddress!, lda: dimension, transposeA: true,
                            b: yp.baseAddress!, ldb: 10, c: tp.baseAddress!, ldc: 10, beta: 1)
                    }
                }
            }
            progress(start + count, train.count)
        }
        let weights = try solveRidge(gram: gram, targets: targets, dimension: dimension)
        // Gemm with transB: weight [10, features], bias [10] (the constant feature's row).
        var classifier = [Float](repeating: 0, count: 10 * (dimension - 1))
        for feature in 0..<(dimension - 1) {
            for label in 0..<10 { classifier[label * (dimension - 1) + feature] = Float(weights[feature * 10 + label]) }
        }
        let bias = (0..<10).map { Float(weights[(dimension - 1) * 10 + $0]) }
        return try makeModel(conv1: conv1, conv2: conv2, conv3: conv3, classifier: (classifier, bias))
    }

    /// Solves (G + λI) W = T by Cholesky in double precision; W is `dimension × 10`.
    func solveRidge(gram: [Float], targets: [Float], dimension n: Int) throws -> [Double] {
        var a = gram.map(Double.init)
        let meanDiagonal = (0..<n).reduce(0.0) { $0 + a[$1 * n + $1] } / Double(n)
        for i in 0..<n { a[i * n + i] += ridge * meanDiagonal }
        for j in 0..<n {
            var diagonal = a[j * n + j]
            for k in 0..<j { diagonal -= a[j * n + k] * a[j * n + k] }
            guard diagonal > 0 else { throw TrainingError(description: "ridge system is not positive definite at column \(j)") }
            let root = diagonal.squareRoot()
            a[j * n + j] = root
            for i in (j + 1)..<n {
                var value = a[i * n + j]
                for k in 0..<j { value -= a[i * n + k] * a[j * n + k] }
                a[i * n + j] = value / root
            }
        }
        var w = targets.map(Double.init)
        for column in 0..<10 {
            for i in 0..<n {
                var value = w[i * 10 + column]
                for k in 0..<i { value -= a[i * n + k] * w[k * 10 + column] }
                w[i * 10 + column] = value / a[i * n + i]
            }
            for i in stride(from: n - 1, through: 0, by: -1) {
                var value = w[i * 10 + column]
                for k in (i + 1)..<n { value -= a[k * n + i] * w[k * 10 + column] }
                w[i * 10 + column] = value / a[i * n + i]
            }
        }
        return w
    }

    /// image → conv/relu → conv = `bottleneck` → relu → conv/relu → flatten (= `features`) [→ gemm = `logits`].
    func makeModel(conv1: Tensor, conv2: Tensor, conv3: Tensor, classifier: ([Float], [Float])?) throws -> Data {
        var builder = ModelBuilder(name: classifier == nil ? "fmnist_rf_features" : "fmnist_rf_c\(bottleneckChannels)")
        builder.input("image", dimensions: [.symbolic("N"), .fixed(1), .fixed(28), .fixed(28)])
        let downsample: [String: AttributeValue] = ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]
        builder.node("Conv", ["image", builder.initializer("conv1.weight", conv1)], ["conv1"], attributes: downsample)
        builder.node("Relu", ["conv1"], ["relu1"])
        builder.node("Conv", ["relu1", builder.initializer("conv2.weight", conv2)], ["bottleneck"], attributes: downsample)
        builder.node("Relu", ["bottleneck"], ["relu2"])
        builder.node(
            "Conv", ["relu2", builder.initializer("conv3.weight", conv3)], ["conv3"],
            attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])])
        builder.node("Relu", ["conv3"], ["relu3"])
        builder.node("Flatten", ["relu3"], ["features"], attributes: ["axis": .int(1)])
        if let (weight, bias) = classifier {
            let w = builder.initializer("classifier.weight", Tensor(shape: [10, tailChannels * 49], scalars: weight))
            let b = builder.initializer("classifier.bias", Tensor(shape: [10], scalars: bias))
            builder.node("Gemm", ["features", w, b], ["logits"], attributes: ["transB": .int(1)])
            builder.output("logits", dimensions: [.symbolic("N"), .fixed(10)])
        } else {
            builder.output("features", dimensions: [.symbolic("N"), .fixed(tailChannels * 49)])
        }
        return try builder.serialized()
    }

    func heWeights(_ shape: [Int], _ generator: inout SeededGenerator) -> Tensor {
        let fanIn = Double(shape[1...].reduce(1, *))
        let scale = (2.0 / fanIn).squareRoot()
        return Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float(generator.normal() * scale) })
    }
}
