import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

@Suite struct GraphCutTests {
    let model: Model
    let input: Tensor

    init() throws {
        model = try Model(serialized: try ModelFixture.residualCNN())
        input = Tensor(shape: [1, 3, 16, 16], scalars: (0..<768).map { Float(($0 * 37) % 101) / 50 - 1 })
    }

    @Test func headThenTailEqualsWholeModel() throws {
        let whole = try InferenceSession(model: model, threads: 1).run(["x": input])["y"]!
        let session = InferenceSession(model: model, threads: 1, optimize: false)
        let plan = try session.plan(for: ["x": TensorType([1, 3, 16, 16], .float32)])
        for cut in ["r1", "sum", "pool", "flat"] {
            let (headData, tailData) = try GraphCut(model: model, at: cut).serializedModels(of: model, cutType: plan.types[cut]!)
            let middle = try InferenceSession(model: try Model(serialized: headData), threads: 1).run(["x": input])[cut]!
            let output = try InferenceSession(model: try Model(serialized: tailData), threads: 1).run([cut: middle])["y"]!
            #expect(output.scalars(as: Float.self) == whole.scalars(as: Float.self), "cut at \(cut)")
        }
    }

    @Test func crossingBranchesAreRefusedByName() throws {
        // Cutting at 'dw' leaves the skip connection 'r1' crossing.
        #expect(throws: ONNXError.self) { try GraphCut(model: model, at: "dw") }
        do {
            _ = try GraphCut(model: model, at: "pw")
        } catch let error as ONNXError {
            #expect(error.description.contains("'r1'"))
        }
    }

    @Test func candidatesSkipTensorsInsideTheResidualBlock() {
        let candidates = GraphCut.candidates(in: model)
        #expect(candidates.contains("r1"))
        #expect(!candidates.contains("dw"))
        #expect(!candidates.contains("pw"))
    }

    @Test func arenaStaysNearTheLiveBound() throws {
        let plan = try InferenceSession(model: model, optimize: false).plan(for: ["x": TensorType([1, 3, 16, 16], .float32)])
        #expect(plan.peakLiveBytes > 0)
        #expect(Double(plan.arenaBytes) <= 1.1 * Double(plan.peakLiveBytes))
    }
}
