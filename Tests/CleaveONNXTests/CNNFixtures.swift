import CleaveTensor
import Foundation

@testable import CleaveONNX

/// The benchmark CNNs of `bench/make_models.py` built in Swift (same layer sequence, seeded
/// random weights), optionally cut short after their first stages so that debug-build tests
/// stay fast: Conv + BatchNormalization + ReLU6/ReLU blocks, inverted residuals, MaxPool.
struct CNNFixture {
    private var builder: ModelBuilder
    private var seed: UInt64
    private var count = 0

    init(name: String, seed: UInt64, input: [Int]) {
        builder = ModelBuilder(name: name)
        builder.input("input", dimensions: input.map { .fixed($0) })
        self.seed = seed
        builder.initializer("zero", Tensor(shape: [], scalars: [Float(0)]))
        builder.initializer("six", Tensor(shape: [], scalars: [Float(6)]))
    }

    private mutating func name(_ kind: String) -> String {
        count += 1
        return "\(kind)_\(count)"
    }

    private mutating func random(_ shape: [Int], center: Float = 0, spread: Float) -> String {
        let values = (0..<shape.reduce(1, *)).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return center + spread * (Float(Int(seed >> 41) % 2001) / 1000 - 1)
        }
        return builder.initializer(name("w"), Tensor(shape: shape, scalars: values))
    }

    /// Conv (pads k/2) → BatchNormalization → ReLU6 (`relu6`), ReLU (`relu`) or nothing.
    mutating func convBN(
        _ x: String, _ channelsIn: Int, _ channelsOut: Int, _ kernel: Int, stride: Int = 1, group: Int = 1, activation: String? = "relu6"
    )
        -> String
    {
        let weight = random(
            [channelsOut, channelsIn / group, kernel, kernel], spread: (6 / Float(channelsIn / group * kernel * kernel)).squareRoot())
        let conv = name("conv")
        builder.node(
            "Conv", [x, weight], [conv],
            attributes: [
                "kernel_shape": .ints([kernel, kernel]), "strides": .ints([stride, stride]),
                "pads": .ints([kernel / 2, kernel / 2, kernel / 2, kernel / 2]),
                "group": .int(group),
            ])
        let parameters = [
            random([channelsOut], center: 1, spread: 0.2), random([channelsOut], spread: 0.1), random([channelsOut], spread: 0.1),
            random([channelsOut], center: 1, spread: 0.4),
        ]
        let normalized = name("bn")
        builder.node("BatchNormalization", [conv] + parameters, [normalized])
        switch activation {
        case "relu6": return builder.node("Clip", [normalized, "zero", "six"], [name("relu6")])
        case "relu": return builder.node("Relu", [normalized], [name("relu")])
        default: return normalized
        }
    }

    mutating func add(_ a: String, _ b: String, relu: Bool = false) -> String {
        let sum = builder.node("Add", [a, b], [name("add")])
        return relu ? builder.node("Relu", [sum], [name("relu")]) : sum
    }

    mutating func maxPool(_ x: String) -> String {
        builder.node(
            "MaxPool", [x], [name("maxpool")], attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])])
    }

    /// Global average pool → flatten → Gemm to `classes` logits.
    mutating func classifier(_ x: String, _ channels: Int, classes: Int) -> String {
        let pooled = builder.node("GlobalAveragePool", [x], [name("pool")])
        let flat = builder.node("Flatten", [pooled], [name("flat")])
        let weight = random([classes, channels], spread: (1 / Float(channels)).squareRoot())
        let bias = random([classes], spread: 0.01)
        return builder.node("Gemm", [flat, weight, bias], ["logits"], attributes: ["transB": .int(1)])
    }

    func model(output: String) throws -> Model {
        var builder = builder
        builder.output(output, dimensions: [])
        return try Model(serialized: try builder.serialized())
    }

    private static func divisible(_ value: Double) -> Int { max(8, Int(value + 4) / 8 * 8) }

    /// MobileNetV2 at `width` and `size`; `rows` of the block table (all seven: the whole
    /// network with its classifier).
    static func mobileNetV2(width: Double, size: Int, rows: Int = 7) throws -> Model {
        var f = CNNFixture(name: "mobilenetv2", seed: 1, input: [1, 3, size, size])
        var channels = divisible(32 * width)
        var x = f.convBN("input", 3, channels, 3, stride: 2)
        let settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        for (expansion, base, repeats, stride) in settings.prefix(rows) {
            let out = divisible(Double(base) * width)
            for index in 0..<repeats {
                let s = index == 0 ? stride : 1
                let hidden = channels * expansion
                var y = x
                if expansion != 1 { y = f.convBN(y, channels, hidden, 1) }
                y = f.convBN(y, hidden, hidden, 3, stride: s, group: hidden)
                y = f.convBN(y, hidden, out, 1, activation: nil)
                x = s == 1 && channels == out ? f.add(x, y) : y
                channels = out
            }
        }
        guard rows == settings.count else { return try f.model(output: x) }
        let last = divisible(1280 * max(1, width))
        x = f.convBN(x, channels, last, 1)
        let logits = f.classifier(x, last, classes: 1000)
        return try f.model(output: logits)
    }

    /// ResNet-18 at `size`; `stages` of its four residual stages (all four: with its classifier).
    static func resNet18(size: Int, stages: Int = 4) throws -> Model {
        var f = CNNFixture(name: "resnet18", seed: 2, input: [1, 3, size, size])
        let stem = f.convBN("input", 3, 64, 7, stride: 2, activation: "relu")
        var x = f.maxPool(stem)
        var channels = 64
        for (out, stride) in [(64, 1), (128, 2), (256, 2), (512, 2)].prefix(stages) {
            for index in 0..<2 {
                let s = index == 0 ? stride : 1
                var y = f.convBN(x, channels, out, 3, stride: s, activation: "relu")
                y = f.convBN(y, out, out, 3, activation: nil)
                let shortcut = s != 1 || channels != out ? f.convBN(x, channels, out, 1, stride: s, activation: nil) : x
                x = f.add(y, shortcut, relu: true)
                channels = out
            }
        }
        guard stages == 4 else { return try f.model(output: x) }
        let logits = f.classifier(x, 512, classes: 1000)
        return try f.model(output: logits)
    }

    /// A seeded image-like input for `model`'s first input.
    static func input(for model: Model, seed: UInt64 = 11) -> Tensor {
        let shape = model.graph.inputs[0].concreteShape()!
        var state = seed
        return Tensor(
            shape: shape,
            scalars: (0..<shape.reduce(1, *)).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int(state >> 41) % 2001) / 1000 - 1
            })
    }
}
