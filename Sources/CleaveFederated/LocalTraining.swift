import CleaveDatasets
import CleaveSupport
import CleaveTensor
import CleaveTrain

/// How a board trains on its own data in one federated round.
///
/// The defaults are niid-bench's: SGD with learning rate 0.01 and momentum 0.9 (momentum
/// restarted every round, as a new optimizer per round does), batch 64, weight decay 1e-5.
public struct LocalTraining: Sendable, Equatable {
    public var epochs: Int
    public var batchSize: Int
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    /// FedProx's μ: adds `μ (w − g)` to every gradient, pulling the local model towards the
    /// global one it started from (0 is plain FedAvg training).
    public var proximalMu: Float

    public init(
        epochs: Int = 10, batchSize: Int = 64, learningRate: Float = 0.01, momentum: Float = 0.9, weightDecay: Float = 1e-5,
        proximalMu: Float = 0
    ) {
        self.epochs = epochs
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.proximalMu = proximalMu
    }

    /// Checks the settings, naming the first one out of range.
    public func validate() throws {
        guard epochs >= 1 else { throw FederatedError("local epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw FederatedError("the local batch size must be at least 1, got \(batchSize)") }
        guard learningRate > 0, learningRate.isFinite else { throw FederatedError("the local learning rate must be positive, got \(learningRate)") }
        guard momentum >= 0, momentum < 1 else { throw FederatedError("momentum must be in [0, 1), got \(momentum)") }
        guard proximalMu >= 0 else { throw FederatedError("FedProx's μ must be non-negative, got \(proximalMu)") }
    }
}

/// What one round of local training produced.
public struct LocalResult: Sendable {
    /// The trained model minus the global model it started from.
    public var delta: [Float]
    public var examples: Int
    /// Mean training loss over the last local epoch.
    public var loss: Double
}

/// One board's trainer: a network of the run's architecture that it loads the global model
/// into, trains on the board's own samples, and reads the change back from.
///
/// Not shareable between threads (the layers keep activations); a process that simulates
/// several boards at once makes one trainer per thread.
public final class LocalTrainer {
    public let network: Sequential
    public let parameters: [Parameter]
    private let data: ImageBatches

    /// A trainer over `data` (the board's copy of the training images) for the niid-bench CNN.
    public init(data: FashionMNIST, seed: UInt64 = 0) {
        var generator = SeededGenerator(seed: seed)
        network = SimpleCNN.make(&generator)
        parameters = network.parameters
        self.data = ImageBatches(data, augment: false)
    }

    /// The run's weight layout.
    public var layout: WeightLayout { WeightLayout(of: parameters) }

    /// The initial global model every client of a run starts from (seeded).
    public static func initialModel(seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return SimpleCNN.make(&generator).parameters.flattened()
    }

    /// The seed of one client's local training at one round (or start), fixed by the run's
    /// seed: the simulation and a board over MQTT shuffle the same way.
    public static func seed(run: UInt64, client: Int, step: Int) -> UInt64 {
        run &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(client) &* 0x1000_0000_01B3 &+ UInt64(step)
    }

    /// Trains from `global` on `samples` (indices into the data) and returns the change.
    ///
    /// `progress` is called after each local epoch with its number and mean loss.
    public func train(
        from global: [Float], samples: [Int], settings: LocalTraining, seed: UInt64, progress: (Int, Double) -> Void = { _, _ in }
    ) throws -> LocalResult {
        try settings.validate()
        guard !samples.isEmpty else { throw FederatedError("a client with no training samples cannot train") }
        try parameters.load(global)
        for parameter in parameters { parameter.resetOptimizerState() }
        var optimizer = SGD(momentum: settings.momentum, weightDecay: settings.weightDecay)
        var generator = SeededGenerator(seed: seed)
        var lastLoss = 0.0
        for epoch in 1...settings.epochs {
            let order = samples.shuffled(using: &generator)
            var lossSum = 0.0
            var batches = 0
            for start in stride(from: 0, to: order.count, by: settings.batchSize) {
                let (images, labels) = data.batch(order[start..<min(start + settings.batchSize, order.count)], generator: &generator)
                let logits = network.forward(images, mode: .training)
                let (loss, gradient) = Loss.softmaxCrossEntropy(logits, labels: labels)
                _ = network.backward(gradient)
                if settings.proximalMu > 0 { addProximalTerm(global: global, mu: settings.proximalMu) }
                optimizer.step(parameters, rate: settings.learningRate)
                lossSum += loss
                batches += 1
            }
            lastLoss = lossSum / Double(max(batches, 1))
            progress(epoch, lastLoss)
        }
        let trained = parameters.flattened()
        return LocalResult(delta: zip(trained, global).map { $0 - $1 }, examples: samples.count, loss: lastLoss)
    }

    /// Share of `test` the model `weights` labels correctly.
    public func accuracy(of weights: [Float], on test: FashionMNIST) throws -> Double {
        try parameters.load(weights)
        return TrainingLoop.accuracy(test) { network.forward($0, mode: .inference) }
    }

    private func addProximalTerm(global: [Float], mu: Float) {
        var offset = 0
        for parameter in parameters {
            let count = parameter.value.count
            for index in 0..<count { parameter.gradient[index] += mu * (parameter.value[index] - global[offset + index]) }
            offset += count
        }
    }
}
