import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

/// Patch-based execution: the same outputs as layer by layer, the memory it plans, and the
/// plans it refuses.
@Suite struct PatchPlanTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// max |patched − layer by layer| / max |layer by layer| over every output.
    static func relativeDifference(_ a: [String: Tensor], _ b: [String: Tensor]) -> Double {
        var worst = 0.0
        for (name, expected) in b {
            let x = a[name]!.scalars(as: Float.self)
            let y = expected.scalars(as: Float.self)
            let scale = Double(y.map { abs($0) }.max() ?? 0)
            let difference = zip(x, y).map { Double(abs($0 - $1)) }.max() ?? 0
            worst = max(worst, difference / max(scale, 1e-30))
        }
        return worst
    }

    /// The last tensor a patch stage can end at that every grid of `grids` fits.
    static func deepestStageEnd(_ planner: PatchPlanner, fitting grids: [PatchGrid]) -> String? {
        planner.stageEnds().last { end in
            let shape = planner.types[end]!.shape
            return grids.allSatisfy { $0.rows <= shape[2] && $0.columns <= shape[3] }
        }
    }

    /// Runs `model` patch by patch on every grid from 2×2 to 8×8 (with the stage ending at the
    /// deepest tensor they fit) and compares with the layer-by-layer run.
    func expectPatchedRunsMatch(_ model: Model, optimize: Bool = true, grids: [PatchGrid] = PatchGrid.automatic) throws {
        let session = InferenceSession(model: model, threads: 2, optimize: optimize)
        let input = CNNFixture.input(for: model)
        let name = model.graph.inputs[0].name
        let expected = try session.run([name: input])
        let planner = try PatchPlanner(session: session)
        let end = try #require(Self.deepestStageEnd(planner, fitting: grids))
        let workspace = PatchWorkspace()
        for grid in grids {
            let plan = try planner.plan(stageEnd: end, grid: grid)
            let actual = try plan.run([name: input], pool: session.pool, workspace: workspace)
            #expect(Set(actual.keys) == Set(expected.keys))
            let difference = Self.relativeDifference(actual, expected)
            #expect(difference <= 1e-5, "\(grid) ending at \(end): relative difference \(difference)")
        }
    }

    @Test func mobileNetV2At224MatchesLayerByLayerOnEveryGrid() throws {
        // The first three rows of the block table: everything at 112 × 112 and 56 × 56, down to 28 × 28.
        try expectPatchedRunsMatch(try CNNFixture.mobileNetV2(width: 1, size: 224, rows: 3))
    }

    @Test func mobileNetV2At96MatchesLayerByLayerOnEveryGrid() throws {
        try expectPatchedRunsMatch(try CNNFixture.mobileNetV2(width: 0.35, size: 96))
    }

    @Test func resNet18MatchesLayerByLayerOnEveryGrid() throws {
        // The stem (7 × 7 stride 2, MaxPool) and the first residual stage, at 56 × 56.
        try expectPatchedRunsMatch(try CNNFixture.resNet18(size: 224, stages: 1))
    }

    @Test(arguments: [true, false])
    func fashionMNISTHeadsMatchLayerByLayerOnEveryGrid(optimize: Bool) throws {
        for head in ["models/fmnist/c4/head.onnx", "models/fmnist-rf-c4/head.onnx"] {
            let model = try Model(contentsOf: Self.repository.appendingPathComponent(head).path)
            // The heads' bottlenecks are 4 × 4 (c4) and 7 × 7: the grids that fit.
            let planner = try PatchPlanner(session: InferenceSession(model: model, threads: 1, optimize: optimize))
            let end = try #require(planner.stageEnds().last)
            #expect(end == model.graph.outputs[0].name, "the whole head can run patch by patch")
            let size = planner.types[end]!.shape[2]
            try expectPatchedRunsMatch(model, optimize: optimize, grids: PatchGrid.automatic.filter { $0.rows <= size })
        }
    }

    @Test func unevenAndNonSquareGridsMatch() throws {
        // 14 × 14 at the stage end of this MobileNetV2-0.35-96 prefix: 3 × 5 and 5 × 3 leave uneven edges.
        let model = try CNNFixture.mobileNetV2(width: 0.35, size: 96, rows: 3)
        try expectPatchedRunsMatch(model, grids: [PatchGrid(rows: 3, columns: 5), PatchGrid(rows: 5, columns: 3), PatchGrid(rows: 1, columns: 4)])
    }

    // MARK: - Memory and cost

    @Test func mobileNetV2At224PatchedNeedsAQuarterOfTheMemoryAtMostFifteenPercentMoreWork() throws {
        let session = InferenceSession(model: try CNNFixture.mobileNetV2(width: 1, size: 224), threads: 1)
        let planner = try PatchPlanner(session: session)
        guard case .patched(let plan) = try planner.choose(budget: planner.layerByLayerBytes / 4) else {
            Issue.record("a quarter of the layer-by-layer memory should need a patch plan")
            return
        }
        #expect(plan.peakBytes * 4 <= planner.layerByLayerBytes)
        #expect(plan.extraMultiplyAddShare <= 0.15, "extra multiply-adds \(plan.extraMultiplyAddShare)")
        #expect(plan.multiplyAdds > planner.baselineMultiplyAdds, "halos are computed twice")
    }

    @Test func aBudgetThatFitsLayerByLayerKeepsLayerByLayer() throws {
        let planner = try PatchPlanner(session: InferenceSession(model: try CNNFixture.mobileNetV2(width: 0.35, size: 96), threads: 1))
        guard case .layerByLayer(let bytes) = try planner.choose(budget: planner.layerByLayerBytes) else {
            Issue.record("the layer-by-layer plan fits and should be chosen")
            return
        }
        #expect(bytes == planner.layerByLayerBytes)
    }

    @Test func theRunHoldsWhatThePlanSays() throws {
        let model = try CNNFixture.mobileNetV2(width: 0.35, size: 96)
        let session = InferenceSession(model: model, threads: 1)
        let planner = try PatchPlanner(session: session)
        let grid = PatchGrid(rows: 4, columns: 4)
        let plan = try planner.plan(stageEnd: try #require(Self.deepestStageEnd(planner, fitting: [grid])), grid: grid)
        let workspace = PatchWorkspace()
        _ = try plan.run(["input": CNNFixture.input(for: model)], pool: session.pool, workspace: workspace)
        // The workspace holds the stage tensor and the largest arena; the input is the caller's.
        let planned = plan.peakBytes - TensorType([1, 3, 96, 96], .float32).byteCount
        #expect(workspace.byteCount == planned)
    }

    // MARK: - Refusals

    @Test func anImpossibleBudgetNamesTheSmallestFeasibleOne() throws {
        let planner = try PatchPlanner(session: InferenceSession(model: try CNNFixture.mobileNetV2(width: 0.35, size: 96), threads: 1))
        #expect {
            try planner.choose(budget: 1024)
        } throws: { error in
            guard let error = error as? PatchPlanError, case .budgetTooSmall(let smallest) = error.reason else { return false }
            // The smallest feasible budget is met by a plan, and one byte less is refused again.
            guard case .patched(let plan) = try? planner.choose(budget: smallest), plan.peakBytes == smallest else { return false }
            #expect((try? planner.choose(budget: smallest - 1)) == nil)
            return error.description.contains("smallest feasible budget is \(ByteCountText(smallest))")
        }
    }

    @Test func aStageEndThatABranchCrossesIsRefusedByName() throws {
        // MobileNetV2-0.35-96 unfused: inside the second block of row 2, the block's input is read
        // again by the residual Add after the depthwise convolution.
        let model = try CNNFixture.mobileNetV2(width: 0.35, size: 96, rows: 2)
        let planner = try PatchPlanner(session: InferenceSession(model: model, threads: 1, optimize: false))
        let add = try #require(model.graph.nodes.last { $0.opType == "Add" })
        let shortcut = add.inputs[0]
        let inside = try #require(model.graph.nodes.first { $0.inputs.contains(shortcut) && $0.opType == "Conv" }?.outputs[0])
        #expect {
            try planner.plan(stageEnd: inside, grid: PatchGrid(rows: 2, columns: 2))
        } throws: { error in
            guard let error = error as? PatchPlanError, error.reason == .branchCrossesStageEnd else { return false }
            return error.description.contains("'\(shortcut)'") && error.description.contains("'\(inside)'")
        }
    }

    @Test func aStageThroughANonLocalLayerIsRefused() throws {
        let model = try CNNFixture.mobileNetV2(width: 0.35, size: 96)
        let planner = try PatchPlanner(session: InferenceSession(model: model, threads: 1))
        #expect(throws: PatchPlanError.self) { try planner.plan(stageEnd: "logits", grid: PatchGrid(rows: 2, columns: 2)) }
        #expect(!planner.stageEnds().contains("logits"))
    }

    @Test func aGridLargerThanTheTensorIsRefused() throws {
        let model = try Model(contentsOf: Self.repository.appendingPathComponent("models/fmnist/c4/head.onnx").path)
        let planner = try PatchPlanner(session: InferenceSession(model: model, threads: 1))
        let end = try #require(planner.stageEnds().last)
        #expect {
            try planner.plan(stageEnd: end, grid: PatchGrid(rows: 8, columns: 8))
        } throws: { error in
            (error as? PatchPlanError)?.reason == .gridTooLarge && "\(error)".contains("8x8")
        }
    }

    @Test func gridsAndByteCountsParse() {
        #expect(PatchGrid("4x3") == PatchGrid(rows: 4, columns: 3))
        #expect(PatchGrid("5") == PatchGrid(rows: 5, columns: 5))
        #expect(PatchGrid("0x2") == nil && PatchGrid("ax2") == nil && PatchGrid("2x2x2") == nil)
        #expect(ByteCountText.parse("256KiB") == 262_144)
        #expect(ByteCountText.parse("1.5 M") == 1_572_864)
        #expect(ByteCountText.parse("4096") == 4096)
        #expect(ByteCountText.parse("12 parsecs") == nil && ByteCountText.parse("") == nil)
    }
}
