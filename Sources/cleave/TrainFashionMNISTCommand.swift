import ArgumentParser
import CleaveDatasets
import CleaveONNX
import CleaveTrain
import Foundation

/// Draws one progress bar per epoch and prints a summary line when the epoch ends.
final class TrainingDisplay {
    private var bar: ProgressBar?

    var observer: TrainingObserver {
        TrainingObserver(
            progress: { [self] progress in
                if progress.batch == 1 { bar = ProgressBar("\(progress.stage) \(progress.epoch)/\(progress.epochs)", total: progress.batches) }
                bar?.update(progress.batch, detail: String(format: "loss %.4f  %.0f img/s", progress.loss, progress.samplesPerSecond))
            },
            epochFinished: { [self] summary in
                bar?.finish(String(format: "loss %.4f", summary.loss))
                bar = nil
                let accuracy = summary.testAccuracy.map { String(format: "  test %.2f%%", $0 * 100) } ?? ""
                print(
                    String(
                        format: "%@ epoch %d/%d  loss %.4f%@  %.1f s  %.0f img/s", summary.stage, summary.epoch, summary.epochs, summary.loss,
                        accuracy, summary.seconds, summary.samplesPerSecond))
                fflush(nil)
            })
    }
}

struct TrainTeacher: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher",
        abstract: "Train the Fashion-MNIST teacher CNN (stage 1 of the split recipe).",
        discussion: """
            Trains the teacher on the 60,000 training images (random shifts of ±1 pixel, AdamW, \
            cosine learning rate) and writes OUT/teacher.onnx with the model's test accuracy in \
            OUT/teacher.json. `cleave train fmnist --teacher OUT/teacher.onnx` reuses it for students.
            """)

    @Option(help: "Training epochs.") var epochs: Int = 8
    @Option(help: "Output folder.") var out: String
    @Option(help: "Random seed (weights, shuffling, augmentation).") var seed: UInt64 = 1
    @Option(help: "Images per batch.") var batchSize: Int = 128
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory

    func run() throws {
        var settings = BottleFitConfiguration(bottleneckChannels: 1)
        settings.teacherEpochs = epochs
        settings.seed = seed
        settings.batchSize = batchSize
        let recipe = try BottleFit(
            configuration: settings, train: try FashionMNIST(split: .train, directory: dataset),
            test: try FashionMNIST(split: .test, directory: dataset), threads: threads, observer: TrainingDisplay().observer)
        let started = Date()
        let teacher = recipe.trainTeacher()
        let minutes = Date().timeIntervalSince(started) / 60
        try writeTeacher(teacher, to: out, command: "cleave train teacher --epochs \(epochs) --seed \(seed)", seed: seed, minutes: minutes)
        print(
            String(
                format: "teacher: test accuracy %.2f%% after %d epochs in %.1f min; wrote %@/teacher.onnx", teacher.accuracy * 100, epochs, minutes,
                out))
    }
}

/// Writes `teacher.onnx` and `teacher.json` (accuracy, command, seed, training time) into `directory`.
func writeTeacher(_ teacher: Teacher, to directory: String, command: String, seed: UInt64, minutes: Double) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let data = try FashionMNISTNetworks.export(
        teacher.network, name: "fmnist-teacher", input: FashionMNISTNetworks.inputName, inputShape: [1, 28, 28])
    try data.write(to: URL(fileURLWithPath: "\(directory)/teacher.onnx"))
    let summary: [String: String] = [
        "accuracy": String(format: "%.4f", teacher.accuracy), "command": command, "seed": "\(seed)",
        "training_minutes": String(format: "%.1f", minutes), "normalization": "pixel / 255",
    ]
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(summary).write(to: URL(fileURLWithPath: "\(directory)/teacher.json"))
}

struct TrainFashionMNIST: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fmnist",
        abstract: "Train a split model with a learned C×4×4 bottleneck for Fashion-MNIST (BottleFit two-stage recipe).",
        discussion: """
            Stages: (1) the teacher CNN on labels, unless --teacher gives a trained one; (2) the student's \
            head (the part that runs on the board, ending in the bottleneck) and a decoder learn to reproduce \
            the teacher's 64×7×7 activation (mean squared error); (3) with the head frozen, the decoder and \
            the teacher's remaining layers are fine-tuned on labels and on the teacher's softened logits \
            (knowledge distillation, T = 4, weight 0.5) while the bottleneck is quantized as the frame codec \
            will (straight-through estimator), then (3b) everything is fine-tuned together the same way.

            Writes OUT/full.onnx, head.onnx, tail.onnx and manifest.json (SHA-256 of each file, bottleneck name \
            and shape, the recommended codec, test accuracy and mean frame bytes per codec, the command and seed). \
            Accuracy per codec is measured through the real path: ONNX head, frame encoder, decoder, ONNX tail.
            """)

    @Option(help: "Channels C of the C×4×4 bottleneck (1–64).") var bottleneckChannels: Int = 2
    @Option(help: "Teacher epochs (ignored with --teacher).") var epochs: Int = 8
    @Option(help: "Stage 2 (distillation) epochs.") var distillEpochs: Int = 3
    @Option(help: "Stage 3 (tail, head frozen) epochs.") var tailEpochs: Int = 1
    @Option(help: "Stage 3b (end-to-end) epochs.") var jointEpochs: Int = 6
    @Option(help: "Bottleneck quantization simulated in stage 3: int4, uint8 or none.") var quantize: String = "int4"
    @Option(help: "A trained teacher.onnx (from `cleave train teacher`); trained here when absent.") var teacher: String?
    @Option(help: "Output folder.") var out: String
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Images per batch.") var batchSize: Int = 128
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory

    func run() throws {
        var settings = BottleFitConfiguration(bottleneckChannels: bottleneckChannels)
        settings.teacherEpochs = epochs
        settings.distillationEpochs = distillEpochs
        settings.tailEpochs = tailEpochs
        settings.jointEpochs = jointEpochs
        settings.batchSize = batchSize
        settings.seed = seed
        switch quantize {
        case "int4": settings.quantizationLevels = 15
        case "uint8": settings.quantizationLevels = 255
        case "none": settings.quantizationLevels = nil
        default: throw ValidationError("--quantize must be int4, uint8 or none, not '\(quantize)'")
        }
        try settings.validate()
        let train = try FashionMNIST(split: .train, directory: dataset)
        let test = try FashionMNIST(split: .test, directory: dataset)
        let recipe = try BottleFit(configuration: settings, train: train, test: test, threads: threads, observer: TrainingDisplay().observer)

        let trainedTeacher: Teacher
        var command = "cleave train fmnist --bottleneck-channels \(bottleneckChannels)"
        if let teacher {
            trainedTeacher = try recipe.loadTeacher(from: teacher)
            print(String(format: "teacher %@: test accuracy %.2f%%", teacher, trainedTeacher.accuracy * 100))
            command += " --teacher \(teacher)"
        } else {
            let started = Date()
            trainedTeacher = recipe.trainTeacher()
            let minutes = Date().timeIntervalSince(started) / 60
            try writeTeacher(trainedTeacher, to: out, command: "cleave train teacher --epochs \(epochs) --seed \(seed)", seed: seed, minutes: minutes)
            print(String(format: "teacher: test accuracy %.2f%% in %.1f min", trainedTeacher.accuracy * 100, minutes))
            command += " --epochs \(epochs)"
        }
        command +=
            " --distill-epochs \(distillEpochs) --tail-epochs \(tailEpochs) --joint-epochs \(jointEpochs) --quantize \(quantize)"
            + " --batch-size \(batchSize) --seed \(seed)"
        let student = try recipe.trainStudent(teacher: trainedTeacher)
        let side = FashionMNISTNetworks.bottleneckSide
        let cutShape = [bottleneckChannels, side, side]
        let full = Sequential("student", student.head.layers + student.tail.layers)
        let name = "fmnist-c\(bottleneckChannels)"
        let input = FashionMNISTNetworks.inputName
        var folder = SplitModelFolder(directory: out, name: name, cutShape: cutShape, command: command, seed: seed)
        folder.headShare = Double(student.headMultiplyAdds) / Double(student.totalMultiplyAdds)
        let (_, results) = try folder.write(
            full: try FashionMNISTNetworks.export(full, name: name, input: input, inputShape: [1, 28, 28]),
            head: try FashionMNISTNetworks.export(student.head, name: "\(name)-head", input: input, inputShape: [1, 28, 28]),
            tail: try FashionMNISTNetworks.export(
                student.tail, name: "\(name)-tail", input: FashionMNISTNetworks.bottleneckName, inputShape: cutShape),
            test: test, threads: threads ?? 2)
        print(
            String(
                format: "student C=%d: test accuracy %.2f%% (teacher %.2f%%); head %d of %d multiply-adds (%.1f%%)", bottleneckChannels,
                student.accuracy * 100, trainedTeacher.accuracy * 100, student.headMultiplyAdds, student.totalMultiplyAdds,
                100 * (folder.headShare ?? 0)))
        SplitModelFolder.printTable(results)
        print("wrote \(out)/{full,head,tail}.onnx and manifest.json")
    }
}
