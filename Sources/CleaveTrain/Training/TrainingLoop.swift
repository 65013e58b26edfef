import CleaveDatasets
import CleaveSupport
import CleaveTensor
import Foundation

/// Fashion-MNIST as training batches: images scaled to 0–1, optionally augmented.
public struct ImageBatches {
    public let data: FashionMNIST
    /// Whether to augment: random shifts of up to ``maximumShift`` pixels, and horizontal flips if ``flips``.
    public var augment: Bool
    public var maximumShift = 1
    public var flips = false

    public init(_ data: FashionMNIST, augment: Bool) {
        self.data = data
        self.augment = augment
    }

    /// Images `indices` as `[n, 1, 28, 28]` and their labels.
    public func batch(_ indices: ArraySlice<Int>, generator: inout SeededGenerator) -> (FloatTensor, [Int]) {
        var images = FloatTensor(shape: [indices.count, 1, 28, 28])
        var labels: [Int] = []
        labels.reserveCapacity(indices.count)
        for (position, index) in indices.enumerated() {
            labels.append(Int(data.labels[index]))
            let source = index * 784
            let target = position * 784
            guard augment else {
                for pixel in 0..<784 { images.data[target + pixel] = Float(data.pixels[source + pixel]) / 255 }
                continue
            }
            let span = UInt64(2 * maximumShift + 1)
            let dx = Int(generator.next() % span) - maximumShift
            let dy = Int(generator.next() % span) - maximumShift
            let flip = flips && generator.next() & 1 == 1
            for y in 0..<28 {
                let sy = y + dy
                guard sy >= 0 && sy < 28 else { continue }
                for x in 0..<28 {
                    let sx = (flip ? 27 - x : x) + dx
                    guard sx >= 0 && sx < 28 else { continue }
                    images.data[target + y * 28 + x] = Float(data.pixels[source + sy * 28 + sx]) / 255
                }
            }
        }
        return (images, labels)
    }
}

/// Where a training stage is, reported after every batch.
public struct TrainingProgress: Sendable {
    public let stage: String
    public let epoch: Int
    public let epochs: Int
    public let batch: Int
    public let batches: Int
    /// Mean loss over the epoch so far.
    public let loss: Double
    /// Training samples per second over the epoch so far.
    public let samplesPerSecond: Double
}

/// What one epoch achieved.
public struct EpochSummary: Sendable {
    public let stage: String
    public let epoch: Int
    public let epochs: Int
    public let loss: Double
    /// Test accuracy after the epoch (0–1), when the stage measures it.
    public let testAccuracy: Double?
    public let seconds: Double
    public let samplesPerSecond: Double
}

/// Receives training progress (per batch) and summaries (per epoch).
public struct TrainingObserver {
    public var progress: (TrainingProgress) -> Void
    public var epochFinished: (EpochSummary) -> Void

    public init(progress: @escaping (TrainingProgress) -> Void = { _ in }, epochFinished: @escaping (EpochSummary) -> Void = { _ in }) {
        self.progress = progress
        self.epochFinished = epochFinished
    }
}

/// Runs epochs of shuffled mini-batches with a cosine learning-rate schedule.
public struct TrainingLoop {
    public var batchSize: Int
    /// Peak learning rate, reached after a short linear warm-up, then decayed to zero by a cosine.
    public var learningRate: Float
    public var epochs: Int
    public var warmupSteps = 100

    public init(batchSize: Int, learningRate: Float, epochs: Int) {
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.epochs = epochs
    }

    /// Trains `parameters`: `step` runs forward and backward on one batch and returns its loss;
    /// `evaluate`, when given, measures test accuracy after each epoch.
    public func run(
        stage: String, data: ImageBatches, parameters: [Parameter], optimizer: inout some Optimizer, generator: inout SeededGenerator,
        observer: TrainingObserver, evaluate: (() -> Double)? = nil, step: (FloatTensor, [Int]) -> Double
    ) {
        let batchesPerEpoch = data.data.count / batchSize
        let totalSteps = max(1, batchesPerEpoch * epochs)
        var stepIndex = 0
        for epoch in 1...max(epochs, 1) where epochs > 0 {
            let order = Array(0..<data.data.count).shuffled(using: &generator)
            let started = Date()
            var lossSum = 0.0
            for batch in 0..<batchesPerEpoch {
                let (images, labels) = data.batch(order[(batch * batchSize)..<((batch + 1) * batchSize)], generator: &generator)
                lossSum += step(images, labels)
                let warm = Float(min(stepIndex + 1, warmupSteps)) / Float(warmupSteps)
                let cosine = 0.5 * (1 + cos(Float.pi * Float(stepIndex) / Float(totalSteps)))
                optimizer.step(parameters, rate: learningRate * warm * cosine)
                stepIndex += 1
                let elapsed = max(Date().timeIntervalSince(started), 1e-9)
                observer.progress(
                    TrainingProgress(
                        stage: stage, epoch: epoch, epochs: epochs, batch: batch + 1, batches: batchesPerEpoch,
                        loss: lossSum / Double(batch + 1), samplesPerSecond: Double((batch + 1) * batchSize) / elapsed))
            }
            let seconds = Date().timeIntervalSince(started)
            let accuracy = evaluate?()
            observer.epochFinished(
                EpochSummary(
                    stage: stage, epoch: epoch, epochs: epochs, loss: lossSum / Double(max(batchesPerEpoch, 1)), testAccuracy: accuracy,
                    seconds: seconds, samplesPerSecond: Double(batchesPerEpoch * batchSize) / max(seconds, 1e-9)))
        }
    }

    /// Share of `data` that `classify` labels correctly, in batches of 500 (inference mode).
    public static func accuracy(_ data: FashionMNIST, classify: (FloatTensor) -> FloatTensor) -> Double {
        let batches = ImageBatches(data, augment: false)
        var generator = SeededGenerator(seed: 0)
        var correct = 0
        for start in stride(from: 0, to: data.count, by: 500) {
            let (images, labels) = batches.batch(Array(start..<min(start + 500, data.count))[...], generator: &generator)
            correct += zip(Loss.predictions(classify(images)), labels).filter { $0 == $1 }.count
        }
        return Double(correct) / Double(max(data.count, 1))
    }
}

/// A training recipe that cannot run as asked (an impossible setting, a teacher of another recipe).
public struct TrainingError: Error, Sendable, CustomStringConvertible {
    public let description: String
}
