import CleaveDatasets
import CleaveONNX
import CleaveSupport
import CleaveTensor
import Foundation

/// Settings of the BottleFit-style recipe; the defaults are what `models/fmnist/` was made with.
public struct BottleFitConfiguration: Sendable {
    /// Channels `C` of the `C×4×4` bottleneck.
    public var bottleneckChannels: Int
    public var teacherEpochs = 8
    /// Stage 2: head and decoder learn the teacher's activation (MSE).
    public var distillationEpochs = 3
    /// Stage 3: tail fine-tuned on labels with the head frozen.
    public var tailEpochs = 1
    /// Stage 3b: everything fine-tuned on labels and on the teacher's softened logits.
    public var jointEpochs = 6
    /// Weight of the teacher's logits (knowledge distillation) against the labels in stages 3 and 3b.
    public var logitDistillationWeight: Float = 0.5
    /// Softmax temperature of the logit distillation.
    public var temperature: Float = 4
    public var batchSize = 128
    /// Steps of simulated bottleneck quantization in stage 3 (15: int4; 255: uint8; `nil`: none).
    public var quantizationLevels: Int? = 15
    public var seed: UInt64 = 1

    public init(bottleneckChannels: Int) {
        self.bottleneckChannels = bottleneckChannels
    }

    /// Checks the settings.
    ///
    /// - Throws: ``TrainingError`` naming the impossible value.
    public func validate() throws {
        guard (1...FashionMNISTNetworks.maximumChannels).contains(bottleneckChannels) else {
            throw TrainingError(
                description: "a \(bottleneckChannels)×4×4 bottleneck is impossible: channels must be 1…\(FashionMNISTNetworks.maximumChannels)")
        }
        guard batchSize >= 2 else { throw TrainingError(description: "batch size \(batchSize) is too small for batch normalization (at least 2)") }
        if let levels = quantizationLevels, !(1...255).contains(levels) {
            throw TrainingError(description: "quantization levels \(levels) must be 1…255")
        }
    }
}

/// A trained teacher: the two halves whose seam the student's decoder imitates.
public struct Teacher {
    public let front: Sequential
    public let back: Sequential
    /// Test accuracy, 0–1.
    public let accuracy: Double

    /// The whole teacher as one network.
    public var network: Sequential { Sequential("teacher", front.layers + back.layers) }
}

/// A trained student: the head that runs on the board and the tail that runs on the coordinator.
public struct Student {
    public let head: Sequential
    public let tail: Sequential
    /// Test accuracy without quantization, 0–1.
    public let accuracy: Double
    /// Multiply-accumulates per sample of the head, and of the whole student.
    public let headMultiplyAdds: Int
    public let totalMultiplyAdds: Int
}

/// Trains split models after BottleFit (Matsubara et al., 2022): teacher, then head distillation
/// to the teacher's intermediate activation, then tail fine-tuning with simulated quantization.
public struct BottleFit {
    public let configuration: BottleFitConfiguration
    public let train: FashionMNIST
    public let test: FashionMNIST
    public let observer: TrainingObserver
    private let pool: ThreadPool

    /// A recipe over the given data, using `threads` threads for OpenBLAS and the layers' loops.
    public init(configuration: BottleFitConfiguration, train: FashionMNIST, test: FashionMNIST, threads: Int?, observer: TrainingObserver) throws {
        try configuration.validate()
        self.configuration = configuration
        self.train = train
        self.test = test
        self.observer = observer
        pool = ThreadPool(threads: threads)
        pool.configureBLAS()
    }

    /// Stage 1: trains the teacher on labels.
    public func trainTeacher() -> Teacher {
        var generator = SeededGenerator(seed: configuration.seed)
        let front = FashionMNISTNetworks.teacherFront(&generator)
        let back = FashionMNISTNetworks.teacherBack(&generator, dropoutSeed: configuration.seed &+ 1)
        let network = Sequential("teacher", front.layers + back.layers)
        var optimizer = Adam(weightDecay: 1e-2)
        let loop = TrainingLoop(batchSize: configuration.batchSize, learningRate: 2e-3, epochs: configuration.teacherEpochs)
        loop.run(
            stage: "teacher", data: ImageBatches(train, augment: true), parameters: network.parameters, optimizer: &optimizer,
            generator: &generator, observer: observer, evaluate: { accuracy(network) }
        ) { images, labels in
            let (loss, gradient) = Loss.softmaxCrossEntropy(network.forward(images, mode: .training), labels: labels)
            _ = network.backward(gradient)
            return loss
        }
        return Teacher(front: front, back: back, accuracy: accuracy(network))
    }

    /// Stages 2 and 3: trains a student against `teacher`.
    public func trainStudent(teacher: Teacher) throws -> Student {
        let channels = configuration.bottleneckChannels
        var generator = SeededGenerator(seed: configuration.seed &+ UInt64(channels) &* 1000)
        let quantizer = FakeQuantize("quantize", levels: nil)
        let head = FashionMNISTNetworks.encoder(channels: channels, quantizer: quantizer, &generator)
        let decoder = FashionMNISTNetworks.decoder(channels: channels, &generator)
        let back = FashionMNISTNetworks.teacherBack(&generator, dropoutSeed: configuration.seed &+ 2)
        for (mine, theirs) in zip(back.parameters + back.buffers, teacher.back.parameters + teacher.back.buffers) {
            mine.value = theirs.value
        }
        let tail = Sequential("tail", decoder.layers + back.layers)
        let student = Sequential("student", head.layers + tail.layers)
        let data = ImageBatches(train, augment: true)

        // Stage 2: head + decoder reproduce the teacher's front activation.
        var distillOptimizer = Adam(weightDecay: 1e-2)
        let distill = Sequential("distill", head.layers + decoder.layers)
        TrainingLoop(batchSize: configuration.batchSize, learningRate: 2e-3, epochs: configuration.distillationEpochs).run(
            stage: "distill", data: data, parameters: distill.parameters, optimizer: &distillOptimizer, generator: &generator,
            observer: observer, evaluate: { accuracy(student) }
        ) { images, _ in
            let target = teacher.front.forward(images, mode: .inference)
            let (loss, gradient) = Loss.meanSquaredError(distill.forward(images, mode: .training), target: target)
            _ = distill.backward(gradient)
            return loss
        }

        // Stage 3: tail on labels and teacher logits, head frozen, bottleneck quantized as the codec will.
        quantizer.levels = configuration.quantizationLevels
        let teacherNetwork = teacher.network
        var tailOptimizer = Adam(weightDecay: 1e-2)
        TrainingLoop(batchSize: configuration.batchSize, learningRate: 1e-3, epochs: configuration.tailEpochs).run(
            stage: "tail", data: data, parameters: tail.parameters, optimizer: &tailOptimizer, generator: &generator,
            observer: observer, evaluate: { accuracy(student) }
        ) { images, labels in
            let features = quantizer.forward(head.forward(images, mode: .inference), mode: .training)
            let logits = tail.forward(features, mode: .training)
            let (loss, gradient) = labelLoss(logits, labels: labels, teacher: teacherNetwork.forward(images, mode: .inference))
            _ = tail.backward(gradient)
            return loss
        }

        // Stage 3b: everything on labels and teacher logits, still quantized.
        var jointOptimizer = Adam(weightDecay: 1e-2)
        TrainingLoop(batchSize: configuration.batchSize, learningRate: 1e-3, epochs: configuration.jointEpochs).run(
            stage: "joint", data: data, parameters: student.parameters, optimizer: &jointOptimizer, generator: &generator,
            observer: observer, evaluate: { accuracy(student) }
        ) { images, labels in
            let logits = student.forward(images, mode: .training)
            let (loss, gradient) = labelLoss(logits, labels: labels, teacher: teacherNetwork.forward(images, mode: .inference))
            _ = student.backward(gradient)
            return loss
        }
        quantizer.levels = nil
        let inputShape = [1, 28, 28]
        return Student(
            head: head, tail: tail, accuracy: accuracy(student), headMultiplyAdds: head.multiplyAdds(inputShape),
            totalMultiplyAdds: student.multiplyAdds(inputShape))
    }

    /// Cross-entropy on labels blended with distillation from the teacher's logits.
    func labelLoss(_ logits: FloatTensor, labels: [Int], teacher: FloatTensor) -> (Double, FloatTensor) {
        let weight = configuration.logitDistillationWeight
        var (loss, gradient) = Loss.softmaxCrossEntropy(logits, labels: labels)
        guard weight > 0 else { return (loss, gradient) }
        let (softLoss, softGradient) = Loss.distillation(logits, teacher: teacher, temperature: configuration.temperature)
        for index in gradient.data.indices { gradient.data[index] = (1 - weight) * gradient.data[index] + weight * softGradient.data[index] }
        loss = Double(1 - weight) * loss + Double(weight) * softLoss
        return (loss, gradient)
    }

    /// Test accuracy of `network` in inference mode.
    public func accuracy(_ network: Sequential) -> Double {
        TrainingLoop.accuracy(test) { network.forward($0, mode: .inference) }
    }
}

extension BottleFit {
    /// Loads a teacher written by `cleave train teacher` and measures its test accuracy.
    ///
    /// - Throws: ``TrainingError`` when the file is missing or is not a teacher of this recipe.
    public func loadTeacher(from path: String) throws -> Teacher {
        let model: Model
        do {
            model = try Model(contentsOf: path)
        } catch {
            throw TrainingError(description: "\(path): cannot load the teacher: \(error)")
        }
        var generator = SeededGenerator(seed: 0)
        let front = FashionMNISTNetworks.teacherFront(&generator)
        let back = FashionMNISTNetworks.teacherBack(&generator, dropoutSeed: configuration.seed &+ 1)
        try FashionMNISTNetworks.load(front, from: model, source: path)
        try FashionMNISTNetworks.load(back, from: model, source: path)
        let network = Sequential("teacher", front.layers + back.layers)
        return Teacher(front: front, back: back, accuracy: accuracy(network))
    }
}
