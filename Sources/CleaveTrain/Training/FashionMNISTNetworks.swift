import CleaveDatasets
import CleaveONNX
import CleaveSupport
import CleaveTensor
import Foundation

/// The networks of the Fashion-MNIST split recipe.
///
/// Teacher: `front` (two conv blocks, `[1, 28, 28]` → `[64, 7, 7]`) then `back`
/// (a third conv block and a two-layer classifier). Student: a light `encoder`
/// (the head that runs on the board, ending in the `C×4×4` bottleneck), then a
/// `decoder` that restores the teacher's `[64, 7, 7]` activation, then a copy of
/// the teacher's `back`. Layer names become ONNX tensor names.
public enum FashionMNISTNetworks {
    /// Name of the bottleneck tensor in the exported head and tail.
    public static let bottleneckName = "bottleneck"
    /// Name of the model input and of the logits output.
    public static let inputName = "image"
    public static let outputName = "logits"
    /// Spatial size of the bottleneck (4×4).
    public static let bottleneckSide = 4
    /// Largest bottleneck width accepted.
    public static let maximumChannels = 64

    public static func teacherFront(_ generator: inout SeededGenerator) -> Sequential {
        Sequential(
            "teacher_front",
            [
                Conv2D("conv1", 1, 32, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("bn1", 32), Rectifier("relu1"),
                MaxPool2D("pool1", kernel: 2),
                Conv2D("conv2", 32, 64, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("bn2", 64), Rectifier("relu2"),
                MaxPool2D("pool2", kernel: 2),
            ])
    }

    public static func teacherBack(_ generator: inout SeededGenerator, dropoutSeed: UInt64) -> Sequential {
        Sequential(
            "teacher_back",
            [
                Conv2D("conv3", 64, 128, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("bn3", 128),
                Rectifier("relu3"), Flatten("flatten"), Dense("fc1", 128 * 49, 128, generator: &generator), Rectifier("relu4"),
                Dropout("dropout", rate: 0.3, seed: dropoutSeed), Dense(outputName, 128, 10, generator: &generator),
            ])
    }

    /// The head: `[1, 28, 28]` → `[C, 4, 4]`, with simulated quantization at the end while training.
    public static func encoder(channels: Int, quantizer: FakeQuantize, _ generator: inout SeededGenerator) -> Sequential {
        Sequential(
            "encoder",
            [
                Conv2D("enc1", 1, 32, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("enc_bn1", 32),
                Rectifier("enc_relu1"), MaxPool2D("enc_pool1", kernel: 2),
                Conv2D("enc2", 32, 64, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &generator), BatchNorm("enc_bn2", 64),
                Rectifier("enc_relu2"),
                Conv2D(bottleneckName, 64, channels, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &generator), quantizer,
            ])
    }

    /// The start of the tail: `[C, 4, 4]` → `[64, 7, 7]`, trained to reproduce the teacher's `front`.
    public static func decoder(channels: Int, _ generator: inout SeededGenerator) -> Sequential {
        Sequential(
            "decoder",
            [
                ConvTranspose2D("dec_up", channels, 64, window: Window2D(kernel: 3, stride: 2, padding: 1), generator: &generator),
                BatchNorm("dec_bn1", 64), Rectifier("dec_relu1"),
                Conv2D("dec_conv", 64, 64, window: Window2D(kernel: 3, padding: 1), generator: &generator), BatchNorm("dec_bn2", 64),
                Rectifier("dec_relu2"),
            ])
    }

    // MARK: - Export and import

    /// Serializes `network` as an ONNX model from tensor `input` (per-sample shape `inputShape`) to its last layer's output.
    public static func export(_ network: Sequential, name: String, input: String, inputShape: [Int]) throws -> Data {
        var builder = ModelBuilder(name: name, opset: 13)
        builder.input(input, dimensions: [.symbolic("N")] + inputShape.map { .fixed($0) })
        let output = network.export(to: &builder, input: input)
        builder.output(output, dimensions: [.symbolic("N")] + network.outputShape(inputShape).map { .fixed($0) })
        return try builder.serialized()
    }

    /// Sets every parameter and running statistic of `network` from the initializers of the same name in `model`.
    ///
    /// - Throws: ``TrainingError`` naming the first tensor that is missing or has another shape.
    public static func load(_ network: Sequential, from model: Model, source: String) throws {
        let initializers = model.graph.initializers
        for parameter in network.parameters + network.buffers {
            guard let tensor = initializers[parameter.name] else {
                throw TrainingError(description: "\(source) has no tensor '\(parameter.name)': it is not a model of this recipe")
            }
            guard tensor.shape == parameter.shape, tensor.dtype == .float32 else {
                throw TrainingError(
                    description: "\(source): '\(parameter.name)' is \(tensor.dtype)\(tensor.shape), expected float32\(parameter.shape)")
            }
            parameter.value = tensor.scalars(as: Float.self)
        }
    }
}
