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
        #expect(fused.executedOperatorCounts == ["Conv": 3, "Add": 1])
        let plain = InferenceSession(model: model, threads: 1, optimize: false)
        #expect(plain.executedOperatorCounts == ["Conv": 3, "BatchNormalization": 3, "Clip": 2, "Add": 1])

        let input = Tensor(shape: [2, 8, 10, 10], scalars: (0..<1600).map { Float(($0 * 53) % 97) / 48 - 1 })
        let expected = try plain.run(["x": input])["y"]!.scalars(as: Float.self)
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
