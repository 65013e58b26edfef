import ArgumentParser
import CleaveCodec
import CleaveDatasets
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTrain
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Make split models for Fashion-MNIST.",
        subcommands: [TrainFashionMNIST.self, TrainTeacher.self, RandomFeatures.self])
}

/// Evaluates a split model on Fashion-MNIST through head → frame codec → tail.
struct SplitEvaluation {
    let accuracy: Double
    let meanFrameBytes: Double

    init(head: InferenceSession, tail: InferenceSession, manifest: ModelManifest, codec: FrameCodec?, zstdLevel: Int?, data: FashionMNIST, limit: Int)
        throws
    {
        var correct = 0
        var bytes = 0
        let count = min(limit, data.count)
        let batch = 250
        for start in stride(from: 0, to: count, by: batch) {
            let size = min(batch, count - start)
            let images = Tensor(shape: [size, 1, 28, 28], scalars: data.pixels[(start * 784)..<((start + size) * 784)].map { Float($0) / 255 })
            guard var features = try head.run([manifest.inputName: images])[manifest.cutTensor] else {
                throw ValidationError("the head model has no output '\(manifest.cutTensor)'")
            }
            if let codec {
                let perSample = features.count / size
                let values = features.scalars(as: Float.self)
                var decoded: [Float] = []
                for sample in 0..<size {
                    let one = Tensor(shape: [1] + manifest.cutShape, scalars: Array(values[(sample * perSample)..<((sample + 1) * perSample)]))
                    let frame = BottleneckCodec.encode(
                        one, requestID: UInt64(start + sample), options: FrameOptions(codec: codec, zstdLevel: zstdLevel))
                    bytes += frame.count
                    decoded += try BottleneckCodec.decode(frame, expectedShape: [1] + manifest.cutShape).tensor.scalars(as: Float.self)
                }
                features = Tensor(shape: features.shape, scalars: decoded)
            }
            let logits = try tail.run([manifest.cutTensor: features]).values.first!.scalars(as: Float.self)
            for sample in 0..<size {
                let row = logits[(sample * 10)..<((sample + 1) * 10)]
                if Classification.argmax(row) == Int(data.labels[start + sample]) { correct += 1 }
            }
        }
        accuracy = Double(correct) / Double(count)
        meanFrameBytes = Double(bytes) / Double(count)
    }
}

struct RandomFeatures: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "random-features",
        abstract: "Fit a split CNN with random convolutions and a least-squares classifier (seconds, ≈83% accuracy).",
        discussion: """
            A stand-in until the BottleFit training recipe lands: the convolutions keep their seeded random \
            initialization, the classifier is solved in closed form on the training set. Writes full.onnx, \
            head.onnx, tail.onnx and manifest.json (hashes, shapes, test accuracy per codec).
            """)

    @Option(help: "Channels of the 7×7 bottleneck.") var bottleneckChannels: Int = 4
    @Option(help: "Output folder.") var out: String
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Threads.") var threads: Int = 2
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory

    func run() throws {
        let train = try FashionMNIST(split: .train, directory: dataset)
        let test = try FashionMNIST(split: .test, directory: dataset)
        let recipe = try RandomFeatureClassifier(bottleneckChannels: bottleneckChannels, seed: seed)
        var bar = ProgressBar("features", total: train.count)
        let fullData = try recipe.fit(train: train, threads: threads) { done, _ in bar.update(done) }
        bar.finish("classifier solved")
        let full = try Model(serialized: fullData)
        // Unfused: the cut tensor must exist in the plan to have a type.
        let session = InferenceSession(model: full, threads: threads, optimize: false)
        let plan = try session.plan(for: ["image": TensorType([1, 1, 28, 28], .float32)])
        let cut = try GraphCut(model: full, at: "bottleneck")
        let (headData, tailData) = try cut.serializedModels(of: full, cutType: plan.types["bottleneck"]!)
        let folder = SplitModelFolder(
            directory: out, name: "fmnist-rf-c\(bottleneckChannels)", cutShape: [bottleneckChannels, 7, 7],
            command: "cleave train random-features --bottleneck-channels \(bottleneckChannels) --seed \(seed)", seed: seed)
        let (_, results) = try folder.write(full: fullData, head: headData, tail: tailData, test: test, threads: threads)
        SplitModelFolder.printTable(results)
        print("wrote \(out)/{full,head,tail}.onnx and manifest.json")
    }
}
