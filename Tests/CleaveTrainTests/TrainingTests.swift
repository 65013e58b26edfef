import CleaveCodec
import CleaveDatasets
import CleaveONNX
import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveTrain

@Suite struct TrainingTests {
    /// A small network with every exportable layer kind.
    func smallNetwork(seed: UInt64) -> Sequential {
        var generator = SeededGenerator(seed: seed)
        let network = Sequential(
            "net",
            [
                Conv2D("c1", 1, 4, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("bn1", 4),
                Rectifier("relu1"), MaxPool2D("pool", kernel: 2),
                Residual(
                    "res",
                    Sequential(
                        "body",
                        [Conv2D("c2", 4, 4, window: Window2D(kernel: 3, padding: 1), groups: 2, generator: &generator), Rectifier("six", ceiling: 6)])
                ),
                Conv2D("c3", 4, 2, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &generator),
                FakeQuantize("q", levels: 15),
                ConvTranspose2D("up", 2, 3, window: Window2D(kernel: 3, stride: 2, padding: 1), outputPadding: 1, generator: &generator),
                AveragePool2D("avg", kernel: 2), Flatten("flat"), Dense("fc", 12, 6, generator: &generator), Dropout("drop", rate: 0.5, seed: 3),
                Dense("logits", 6, 3, generator: &generator),
            ])
        // Non-trivial running statistics, so that export must carry them.
        for parameter in network.buffers { parameter.value = parameter.value.map { $0 + 0.3 } }
        return network
    }

    @Test func exportedModelComputesWhatTheLayersCompute() throws {
        let network = smallNetwork(seed: 4)
        var generator = SeededGenerator(seed: 9)
        let input = FloatTensor(shape: [3, 1, 8, 8], data: (0..<192).map { _ in Float(generator.normal()) })
        let expected = network.forward(input, mode: .inference)
        let data = try FashionMNISTNetworks.export(network, name: "small", input: "x", inputShape: [1, 8, 8])
        let session = InferenceSession(model: try Model(serialized: data))
        let output = try session.run(["x": Tensor(shape: input.shape, scalars: input.data)])
        let actual = try #require(output["logits"]).scalars(as: Float.self)
        #expect(actual.count == expected.count)
        let worst = zip(actual, expected.data).map { abs($0 - $1) }.max() ?? 1
        #expect(worst < 1e-4)
    }

    @Test func fakeQuantizationMatchesTheCodec() throws {
        var generator = SeededGenerator(seed: 5)
        let input = FloatTensor(shape: [4, 2, 4, 4], data: (0..<128).map { _ in Float(generator.normal() * 3) })
        for (codec, levels) in [(FrameCodec.uint8, 255), (.int4, 15)] {
            let simulated = FakeQuantize("q", levels: levels).forward(input, mode: .training)
            for sample in 0..<4 {
                let one = input.samples(sample..<(sample + 1))
                let frame = BottleneckCodec.encode(
                    Tensor(shape: one.shape, scalars: one.data), requestID: 1, options: FrameOptions(codec: codec, zstdLevel: nil))
                let decoded = try BottleneckCodec.decode(frame, expectedShape: one.shape).tensor.scalars(as: Float.self)
                let mine = Array(simulated.samples(sample..<(sample + 1)).data)
                let worst = zip(decoded, mine).map { abs($0 - $1) }.max() ?? 1
                #expect(worst < 1e-5, "\(codec) sample \(sample)")
            }
        }
        #expect(FakeQuantize("q", levels: 15).forward(input, mode: .inference) == input)
    }

    @Test func adamAndSGDFitASeparableProblem() {
        for useAdam in [true, false] {
            var generator = SeededGenerator(seed: 11)
            let layer = Dense("fc", 2, 2, generator: &generator)
            let points = (0..<64).map { _ in (Float(generator.normal()), Float(generator.normal())) }
            let input = FloatTensor(shape: [64, 2], data: points.flatMap { [$0.0, $0.1] })
            let labels = points.map { $0.0 + 0.5 * $0.1 > 0 ? 1 : 0 }
            var adam = Adam(weightDecay: 0)
            var sgd = SGD(momentum: 0.9, weightDecay: 0)
            let first = Loss.softmaxCrossEntropy(layer.forward(input, mode: .training), labels: labels).loss
            for _ in 0..<200 {
                let (_, gradient) = Loss.softmaxCrossEntropy(layer.forward(input, mode: .training), labels: labels)
                _ = layer.backward(gradient)
                if useAdam { adam.step(layer.parameters, rate: 0.05) } else { sgd.step(layer.parameters, rate: 0.05) }
            }
            let last = Loss.softmaxCrossEntropy(layer.forward(input, mode: .inference), labels: labels)
            #expect(last.loss < first * 0.5, "adam=\(useAdam): \(first) → \(last.loss)")
            let correct = zip(Loss.predictions(layer.forward(input, mode: .inference)), labels).filter { $0 == $1 }.count
            #expect(correct >= 60)
            #expect(layer.weight.gradient.allSatisfy { $0 == 0 })
        }
    }

    @Test func frozenParametersDoNotMove() {
        var generator = SeededGenerator(seed: 2)
        let layer = Dense("fc", 3, 2, generator: &generator)
        layer.weight.trainable = false
        let before = layer.weight.value
        let (_, gradient) = Loss.softmaxCrossEntropy(layer.forward(FloatTensor(shape: [1, 3], data: [1, 2, 3]), mode: .training), labels: [1])
        _ = layer.backward(gradient)
        var adam = Adam()
        adam.step(layer.parameters, rate: 0.1)
        #expect(layer.weight.value == before)
        #expect(layer.bias.value != [0, 0])
    }

    @Test func trainingIsDeterministicForASeed() {
        func trainedWeights() -> [Float] {
            let network = smallNetwork(seed: 21)
            var generator = SeededGenerator(seed: 8)
            var optimizer = Adam()
            for _ in 0..<3 {
                let input = FloatTensor(shape: [4, 1, 8, 8], data: (0..<256).map { _ in Float(generator.normal()) })
                let (_, gradient) = Loss.softmaxCrossEntropy(network.forward(input, mode: .training), labels: [0, 1, 2, 1])
                _ = network.backward(gradient)
                optimizer.step(network.parameters, rate: 0.01)
            }
            return network.parameters.flatMap(\.value)
        }
        #expect(trainedWeights() == trainedWeights())
    }

    @Test func impossibleBottlenecksAreRefusedByValue() {
        for channels in [0, -3, 65] {
            do {
                try BottleFitConfiguration(bottleneckChannels: channels).validate()
                Issue.record("\(channels) channels accepted")
            } catch {
                #expect("\(error)".contains("\(channels)×4×4 bottleneck is impossible"))
            }
        }
    }

    @Test func aModelOfAnotherRecipeIsNotATeacher() throws {
        var generator = SeededGenerator(seed: 1)
        let other = Sequential("other", [Flatten("flat"), Dense("fc", 784, 10, generator: &generator)])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-not-teacher-\(getpid()).onnx").path
        try FashionMNISTNetworks.export(other, name: "other", input: "image", inputShape: [1, 28, 28]).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let data = try FashionMNIST(split: .test)
        let recipe = try BottleFit(
            configuration: BottleFitConfiguration(bottleneckChannels: 2), train: data, test: data, threads: 1, observer: TrainingObserver())
        do {
            _ = try recipe.loadTeacher(from: path)
            Issue.record("a model of another recipe was loaded as a teacher")
        } catch {
            #expect("\(error)".contains("has no tensor 'conv1.weight'"))
        }
    }

    @Test func truncatedDatasetFileIsNamed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fmnist-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            let original = try Data(contentsOf: URL(fileURLWithPath: "\(FashionMNIST.defaultDirectory)/\(name)"))
            try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
        }
        do {
            _ = try FashionMNIST(split: .test, directory: directory)
            Issue.record("a truncated data set was accepted")
        } catch {
            #expect("\(error)".contains(directory))
        }
    }
}
