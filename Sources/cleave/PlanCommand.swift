import ArgumentParser
import CleaveONNX
import CleaveTensor
import Foundation

// MARK: - plan

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Choose how a model runs within an activation-memory budget: layer by layer, or its first layers patch by patch.",
        discussion: """
            Peak activation memory is what a run holds besides the weights: the input, and the arena of whatever runs \
            (the layer-by-layer plan's; or, patch by patch, the stage's output tensor plus one patch's arena while the patch \
            stage runs, then the rest's arena). The planner tries every tensor the patch stage can end at (made from the \
            image by convolutions, pools and pointwise layers only, with no branch crossing it) and every grid from 2x2 to \
            8x8, and keeps the plan that fits with the fewest multiply-adds. It then prints the halo each layer of the \
            stage reads for the largest patch, and the curve over grids at the chosen stage end.

            Examples:
              cleave model plan bench/out/mobilenetv2_224.onnx --memory-budget 1.5MiB
              cleave model plan models/fmnist/c4/full.onnx --cut bottleneck --memory-budget 24KiB
              cleave model plan bench/out/resnet18_224.onnx --stage-end add_20 --format csv
            """)

    @Argument(help: "The .onnx file.") var model: String
    @Option(help: ArgumentHelp("Activation memory the run may hold, such as 256KiB or 1.5MiB (binary units).", valueName: "bytes"))
    var memoryBudget: String?
    @Option(help: "Plan the head of the model: every node up to this tensor (as `cleave model split --at` cuts it).")
    var cut: String?
    @Option(help: "End the patch stage at this tensor instead of trying every one.") var stageEnd: String?
    @Option(help: ArgumentHelp("Print this grid's plan instead of choosing one (needs --stage-end or a budget).", valueName: "NxM"))
    var grid: String?
    @Option(help: "text (the default) or csv (the curve only: one line per stage end and grid).") var format: String = "text"
    @Flag(inversion: .prefixedNo, help: "Plan the fused graph (the default, what runs) or the graph as written.") var optimize = true
    @OptionGroup var shape: ShapeOptions

    func run() throws {
        guard ["text", "csv"].contains(format) else { throw ValidationError("--format must be text or csv, not '\(format)'") }
        let budget = try memoryBudget.map(parseBudget)
        let session = try patchSession(model: model, cut: cut, optimize: optimize)
        let planner = try PatchPlanner(session: session, inputTypes: try shape.types(for: session))
        if format == "csv" {
            print("stage_end,grid,peak_bytes,patch_stage_bytes,layer_stage_bytes,multiply_adds,extra_multiply_add_share,layer_by_layer_bytes")
            for end in stageEnd.map({ [$0] }) ?? planner.stageEnds() {
                for plan in try planner.curve(stageEnd: end) {
                    print(
                        "\(end),\(plan.grid),\(plan.peakBytes),\(plan.patchStageBytes),\(plan.layerStageBytes),\(plan.multiplyAdds),"
                            + String(format: "%.5f", plan.extraMultiplyAddShare) + ",\(planner.layerByLayerBytes)")
                }
            }
            return
        }
        print("model           \(model)\(cut.map { "  (head up to '\($0)')" } ?? "")")
        print(
            "layer by layer  \(formatBytes(planner.layerByLayerBytes)) peak activation memory, \(formatCount(planner.baselineMultiplyAdds)) multiply-adds"
        )
        let chosen: PlanChoice
        if let grid {
            guard let parsed = PatchGrid(grid) else { throw ValidationError("--grid must be NxM with positive numbers, such as 4x4") }
            guard let end = stageEnd ?? budget.flatMap({ try? bestStageEnd(planner, budget: $0, grid: parsed) }) else {
                throw ValidationError("--grid needs --stage-end (or a --memory-budget to choose the stage end)")
            }
            chosen = .patched(try planner.plan(stageEnd: end, grid: parsed))
        } else if let budget {
            print("budget          \(formatBytes(budget))")
            chosen = PlanChoice(try planner.choose(budget: budget, stageEnd: stageEnd))
        } else if let stageEnd {
            chosen = .curveOnly(stageEnd)
        } else {
            throw ValidationError("give --memory-budget (to choose a plan), or --stage-end (for its curve)")
        }
        switch chosen {
        case .layerByLayer:
            print("chosen          layer by layer: it fits")
            return
        case .patched(let plan):
            describe(plan, planner)
            try printCurve(planner, stageEnd: plan.stageEnd, marking: plan.grid)
        case .curveOnly(let end):
            try printCurve(planner, stageEnd: end, marking: nil)
        }
    }

    enum PlanChoice {
        case layerByLayer
        case patched(PatchPlan)
        case curveOnly(String)

        init(_ choice: PatchChoice) {
            switch choice {
            case .layerByLayer: self = .layerByLayer
            case .patched(let plan): self = .patched(plan)
            }
        }
    }

    func bestStageEnd(_ planner: PatchPlanner, budget: Int, grid: PatchGrid) throws -> String? {
        guard case .patched(let plan) = try planner.choose(budget: budget, grids: [grid]) else { return nil }
        return plan.stageEnd
    }

    func describe(_ plan: PatchPlan, _ planner: PatchPlanner) {
        print("chosen          patch stage ends at '\(plan.stageEnd)' \(plan.stageType), grid \(plan.grid) (\(plan.programCount) distinct patches)")
        print(
            "peak            \(formatBytes(plan.peakBytes)) (patch stage \(formatBytes(plan.patchStageBytes)), layer stage \(formatBytes(plan.layerStageBytes))), "
                + String(format: "%.2f× less than layer by layer", Double(planner.layerByLayerBytes) / Double(plan.peakBytes)))
        print("multiply-adds   \(formatCount(plan.multiplyAdds)) (" + String(format: "%+.2f%%", plan.extraMultiplyAddShare * 100) + " for the halos)")
        print("halo            the largest patch, layer by layer (output rows x columns ← input rows x columns read):")
        for layer in plan.layers {
            print("  \(layer.node) (\(layer.opType))  \(layer.output.rows)x\(layer.output.columns) ← \(layer.input.rows)x\(layer.input.columns)")
        }
    }

    func printCurve(_ planner: PatchPlanner, stageEnd: String, marking: PatchGrid?) throws {
        print("curve           stage end '\(stageEnd)'")
        print("  grid   peak         patch stage  layer stage  vs layer by layer  extra multiply-adds")
        for plan in try planner.curve(stageEnd: stageEnd) {
            let ratio = Double(planner.layerByLayerBytes) / Double(plan.peakBytes)
            print(
                "\(plan.grid == marking ? "* " : "  ")\(plan.grid.description.padding(toLength: 5, withPad: " ", startingAt: 0))  "
                    + "\(formatBytes(plan.peakBytes).padding(toLength: 11, withPad: " ", startingAt: 0))  "
                    + "\(formatBytes(plan.patchStageBytes).padding(toLength: 11, withPad: " ", startingAt: 0))  "
                    + "\(formatBytes(plan.layerStageBytes).padding(toLength: 11, withPad: " ", startingAt: 0))  "
                    + String(format: "%6.2f×             %+.2f%%", ratio, plan.extraMultiplyAddShare * 100))
        }
    }
}

/// Parses a `--memory-budget` value.
func parseBudget(_ text: String) throws -> Int {
    guard let bytes = ByteCountText.parse(text), bytes > 0 else {
        throw ValidationError("memory budget '\(text)': expected a positive size such as 256KiB, 1.5MiB or 65536")
    }
    return bytes
}

/// The session a patch plan is made for: the model, or its head up to `cut`.
func patchSession(model: String, cut: String?, optimize: Bool, threads: Int? = 1) throws -> InferenceSession {
    guard let cut else { return try InferenceSession(contentsOf: model, threads: threads, optimize: optimize) }
    let whole = try InferenceSession(contentsOf: model, threads: 1, optimize: false)
    let plan = try whole.plan(for: whole.declaredInputTypes())
    let graphCut = try GraphCut(model: whole.model, at: cut)
    guard let type = plan.types[cut] else { throw ValidationError("no type could be inferred for '\(cut)'") }
    let head = try graphCut.serializedModels(of: whole.model, cutType: type).head
    return InferenceSession(model: try Model(serialized: head, source: "\(model) up to '\(cut)'"), threads: threads, optimize: optimize)
}

/// `--patch auto|NxM` for `model run` and `model bench`.
struct PatchOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Run the first layers patch by patch: auto (the plan `cleave model plan` chooses for --memory-budget, or the one with the least memory) or a grid NxM (at --stage-end, or the stage end auto would choose).",
            valueName: "auto|NxM"))
    var patch: String?
    @Option(help: ArgumentHelp("With --patch auto: the activation memory the run may hold, such as 256KiB.", valueName: "bytes"))
    var memoryBudget: String?
    @Option(help: "With --patch: end the patch stage at this tensor.") var stageEnd: String?

    /// The plan to run, or `nil` for layer by layer.
    func plan(_ session: InferenceSession, types: [String: TensorType]) throws -> PatchPlan? {
        guard let patch else {
            if memoryBudget != nil || stageEnd != nil { throw ValidationError("--memory-budget and --stage-end go with --patch") }
            return nil
        }
        let planner = try PatchPlanner(session: session, inputTypes: types)
        let grids: [PatchGrid]
        if patch == "auto" {
            grids = PatchGrid.automatic
        } else if let grid = PatchGrid(patch) {
            grids = [grid]
        } else {
            throw ValidationError("--patch must be auto or a grid NxM such as 4x4, not '\(patch)'")
        }
        if let stageEnd, grids.count == 1 { return try planner.plan(stageEnd: stageEnd, grid: grids[0]) }
        let budget = try memoryBudget.map(parseBudget) ?? smallestFeasible(planner, stageEnd: stageEnd, grids: grids)
        switch try planner.choose(budget: budget, stageEnd: stageEnd, grids: grids) {
        case .layerByLayer: return nil
        case .patched(let plan): return plan
        }
    }

    private func smallestFeasible(_ planner: PatchPlanner, stageEnd: String?, grids: [PatchGrid]) throws -> Int {
        do {
            _ = try planner.choose(budget: 0, stageEnd: stageEnd, grids: grids)
            return 0
        } catch let error as PatchPlanError {
            guard case .budgetTooSmall(let smallest) = error.reason else { throw error }
            return smallest
        }
    }
}
