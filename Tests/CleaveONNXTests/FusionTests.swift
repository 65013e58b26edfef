import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

/// Conv + BatchNormalization folding and activation fusion on a MobileNetV2 inverted-residual block.
@Suite struct FusionTests {
    /// expand 1×1 → BN → ReLU6, depthwise 3×3 → BN → ReLU6, project 1×1 → BN, + input.
    static func invertedResidual() throws -> Data {
        var builder = ModelBuilder(name: "inverted_residual")
        builder.input("x", dimensions: [.symbolic("N"), .fixed(8), .fixed(10), .fixed(10)])
        var seed: UInt64 = 3
        func random(_ shape: [Int], around center: Float = 0, spread: Float = 0.5) -> Tensor {
            Tensor(
                shape: shape,
                scalars: (0..<shape.reduce(1, *)).map { _ in
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    return center + spread * (Float(Int(seed >> 41) % 2001) / 1000 - 1)
                })
        }
        let six = builder.initializer("six", Tensor(shape: [], scalars: [Float(6)]))
        let zero = builder.initializer("zero", Tensor(shape: [], scalars: [Float(0)]))
        var current = "x"
        for (index, (channelsIn, channelsOut, kernel, group, activation)) in [
            (8, 24, 1, 1, true), (24, 24, 3, 24, true), (24, 8, 1, 1, false),
        ].enumerated() {
            let w = builder.initializer("w\(index)", random([channelsOut, channelsIn / group, kernel, kernel]))
            let pads = kernel / 2
            builder.node(
                "Conv", [current, w], ["conv\(index)"],
                attributes: ["kernel_shape": .ints([kernel, kernel]), "pads": .ints([pads, pads, pads, pads]), "group": .int(group)])
            let parameters = ["scale", "bias", "mean", "var"].map { name in
                builder.initializer("\(name)\(index)", random([channelsOut], around: name == "var" ? 1 : 0, spread: name == "var" ? 0.4 : 0.5))
            }
            builder.node("BatchNormalization", ["conv\(index)"] + parameters, ["bn\(index)"])
            current = "bn\(index)"
            if activation {
                builder.node("Clip", [current, zero, six], ["relu6_\(index)"])
                current = "relu6_\(index)"
            }
        }
        builder.node("Add", [current, "x"], ["y"])
        builder.output("y", dimensions: [.symbolic("N"), .fixed(8), .fixed(10), .fixed(10)])
        return try builder.serialized()
    }

    @Test func foldsEveryBatchNormAndFusesEveryReLU6() throws {
        let model = try Model(serialized: try Self.invertedResidual())
        let fused = InferenceSession(model: model, threads: 1, optimize: true)
        #expect(fused.foldedBatchNorms == 3)
        #expect(fused.fusedActivations == 2)
        #expect(fused.fusedResiduals == 1)
        #expect(fused.executedOperatorCounts == ["Conv": 3])
        let plain = InferenceSession(model: model, threads: 1, optimize: false)
        #expect(plain.executedOperatorCounts == ["Conv": 3, "BatchNormalization": 3, "Clip": 2, "Add": 1])

        let input = Tensor(shape: [2, 8, 10, 10], scalars: (0..<1600).map { Float(($0 * 53) % 97) / 48 - 1 })
        let expected = try plain.run(["x": input])["y"]!.scalars(as: Float.self)
        let actual = try fused.run(["x": input])["y"]!.scalars(as: Float.self)
        let scale = expected.map(abs).max()!
        for index in expected.indices { #expect(abs(actual[index] - expected[index]) <= 1e-5 * scale, "element \(index)") }
    }

    /// A ResNet basic block with a projection shortcut written after the main branch:
    /// conv → BN → Relu → conv → BN, + (1×1 conv → BN of the input), → Relu.
    @Test func residualAddAndItsReluJoinTheConvolutionBeforeThem() throws {
        var builder = ModelBuilder(name: "basic_block")
        builder.input("x", dimensions: [.fixed(1), .fixed(4), .fixed(6), .fixed(6)])
        var seed: UInt64 = 11
        func random(_ shape: [Int], around center: Float = 0) -> Tensor {
            Tensor(
                shape: shape,
                scalars: (0..<shape.reduce(1, *)).map { _ in
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    return center + 0.4 * (Float(Int(seed >> 41) % 2001) / 1000 - 1)
                })
        }
        func convBN(_ input: String, _ name: String, channelsIn: Int, kernel: Int) -> String {
            let w = builder.initializer("w_\(name)", random([6, channelsIn, kernel, kernel]))
            let pad = kernel / 2
            builder.node(
                "Conv", [input, w], ["c_\(name)"], attributes: ["kernel_shape": .ints([kernel, kernel]), "pads": .ints([pad, pad, pad, pad])])
            let parameters = ["scale", "bias", "mean", "var"].map { builder.initializer("\($0)_\(name)", random([6], around: $0 == "var" ? 1 : 0)) }
            builder.node("BatchNormalization", ["c_\(name)"] + parameters, ["bn_\(name)"])
            return "bn_\(name)"
        }
        let first = convBN("x", "a", channelsIn: 4, kernel: 3)
        builder.node("Relu", [first], ["r_a"])
        let main = convBN("r_a", "b", channelsIn: 6, kernel: 3)
        let shortcut = convBN("x", "s", channelsIn: 4, kernel: 1)
        builder.node("Add", [shortcut, main], ["sum"])
        builder.node("Relu", ["sum"], ["y"])
        builder.output("y", dimensions: [.fixed(1), .fixed(6), .fixed(6), .fixed(6)])
        let model = try Model(serialized: try builder.serialized())
        let fused = InferenceSession(model: model, threads: 1, optimize: true)
        #expect(fused.executedOperatorCounts == ["Conv": 3])
        #expect(fused.fusedResiduals == 1)
        #expect(fused.fusedActivations == 2)
        let plain = InferenceSession(model: model, threads: 1, optimize: false)
        let input = Tensor(shape: [1, 4, 6, 6], scalars: (0..<144).map { Float(($0 * 37) % 89) / 44 - 1 })
        let expected = try plain.run(["x": input])["y"]!.scalars(as: Float.self)
        let actual = try fused.run(["x": input])["y"]!.scalars(as: Float.self)
        #expect(expected.contains { $0 == 0 } && expected.contains { $0 > 0 }, "the final Relu clips some values")
        for index in expected.indices { #expect(abs(actual[index] - expected[index]) <= 1e-5, "element \(index)") }
    }

    /// An Add whose other operand broadcasts (a per-channel constant) or is larger than the
    /// convolution's output (batch 2 against batch 1) still computes what the graph says.
    @Test(arguments: [[1, 3, 1, 1], [2, 3, 5, 5]])
    func broadcastingAddsStayCorrect(_ otherShape: [Int]) throws {
        var builder = ModelBuilder(name: "broadcast_add")
        builder.input("x", dimensions: [.fixed(1), .fixed(2), .fixed(5), .fixed(5)])
        builder.input("o", dimensions: otherShape.map { .fixed($0) })
        let w = builder.initializer("w", Tensor(shape: [3, 2, 1, 1], scalars: [1, -2, 0.5, 3, -1, 0.25] as [Float]))
        builder.node("Conv", ["x", w], ["c"], attributes: ["kernel_shape": .ints([1, 1])])
        builder.node("Add", ["c", "o"], ["y"])
        builder.output("y", dimensions: Broadcast.shape([[1, 3, 5, 5], otherShape])!.map { .fixed($0) })
        let model = try Model(serialized: try builder.serialized())
        let fused = InferenceSession(model: model, threads: 1, optimize: true)
        #expect(fused.fusedResiduals == 1)
        let inputs = [
            "x": Tensor(shape: [1, 2, 5, 5], scalars: (0..<50).map { Float($0 % 7) - 3 }),
            "o": Tensor(shape: otherShape, scalars: (0..<otherShape.reduce(1, *)).map { Float($0 % 11) / 4 }),
        ]
        let expected = try InferenceSession(model: model, threads: 1, optimize: false).run(inputs)["y"]!
        let actual = try fused.run(inputs)["y"]!
        #expect(actual.shape == expected.shape)
        #expect(actual.scalars(as: Float.self) == expected.scalars(as: Float.self))
    }

    /// A 3×3 convolution with 16 channels runs on filters transformed once, with padding, on an
    /// odd-sized input; one with 8 input channels keeps its weights.
    @Test func winogradFiltersArePreparedOnce() throws {
        var builder = ModelBuilder(name: "winograd")
        builder.input("x", dimensions: [.fixed(2), .fixed(16), .fixed(9), .fixed(7)])
        func filter(_ shape: [Int], _ salt: Int) -> Tensor {
            Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { Float(($0 * 31 + salt) % 23) / 23 - 0.5 })
        }
        let w0 = builder.initializer("w0", filter([24, 16, 3, 3], 1))
        let w1 = builder.initializer("w1", filter([16, 24, 3, 3], 5))
        let b1 = builder.initializer("b1", filter([16], 9))
        builder.node("Conv", ["x", w0], ["c0"], attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])])
        builder.node("Relu", ["c0"], ["r0"])
        builder.node("Conv", ["r0", w1, b1], ["c1"], attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([0, 1, 1, 0])])
        let small = builder.initializer("w2", filter([8, 16, 3, 3], 3))
        builder.node("Conv", ["c1", small], ["y"], attributes: ["kernel_shape": .ints([3, 3])])
        builder.output("y", dimensions: [.fixed(2), .fixed(8), .fixed(6), .fixed(5)])
        let model = try Model(serialized: try builder.serialized())
        let fused = InferenceSession(model: model, threads: 2, optimize: true)
        #expect(fused.winogradConvolutions == 2)
        let input = Tensor(shape: [2, 16, 9, 7], scalars: (0..<2016).map { Float(($0 * 53) % 97) / 48 - 1 })
        let expected = try InferenceSession(model: model, threads: 1, optimize: false).run(["x": input])["y"]!.scalars(as: Float.self)
        let actual = try fused.run(["x": input])["y"]!.scalars(as: Float.self)
        let scale = expected.map(abs).max()!
        for index in expected.indices { #expect(abs(actual[index] - expected[index]) <= 1e-5 * scale, "element \(index)") }
    }

    @Test func tensorsOtherNodesReadAreNotFusedAway() throws {
        var builder = ModelBuilder(name: "branch")
        builder.input("x", dimensions: [.fixed(1), .fixed(2), .fixed(4), .fixed(4)])
        let w = builder.initializer("w", Tensor(shape: [2, 2, 1, 1], scalars: [1, 0.5, -0.25, 2] as [Float]))
        builder.node("Conv", ["x", w], ["c"], attributes: ["kernel_shape": .ints([1, 1])])
        builder.node("Relu", ["c"], ["r"])
        builder.node("Add", ["c", "r"], ["y"])  // 'c' has two readers: the Relu must stay separate
        builder.output("y", dimensions: [.fixed(1), .fixed(2), .fixed(4), .fixed(4)])
        let session = InferenceSession(model: try Model(serialized: try builder.serialized()), optimize: true)
        #expect(session.fusedActivations == 0)
        #expect(session.executedOperatorCounts["Relu"] == 1)
    }
}
