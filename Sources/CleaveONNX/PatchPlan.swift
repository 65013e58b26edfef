import CleaveTensor

/// Rows × columns of a patch grid over the patch stage's output.
public struct PatchGrid: Sendable, Hashable, CustomStringConvertible {
    public let rows: Int
    public let columns: Int

    /// The grids automatic planning tries: 2×2 to 8×8.
    public static let automatic = (2...8).map { PatchGrid(rows: $0, columns: $0) }

    public init(rows: Int, columns: Int) {
        self.rows = rows
        self.columns = columns
    }

    /// Parses `4x4` (or `4` for a square grid); `nil` unless both numbers are positive.
    public init?(_ text: String) {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let rows = Int(parts[0]), let columns = Int(parts.last!), rows > 0, columns > 0 else {
            return nil
        }
        self.init(rows: rows, columns: columns)
    }

    public var description: String { "\(rows)x\(columns)" }
}

/// A rectangle of a tensor's two spatial axes (the last two of `[N, C, H, W]`).
struct SpatialBox: Hashable, Sendable {
    var rows: Range<Int>
    var columns: Range<Int>

    func union(_ other: SpatialBox) -> SpatialBox {
        SpatialBox(
            rows: min(rows.lowerBound, other.rows.lowerBound)..<max(rows.upperBound, other.rows.upperBound),
            columns: min(columns.lowerBound, other.columns.lowerBound)..<max(columns.upperBound, other.columns.upperBound))
    }

    /// This box in the coordinates of `outer`, which contains it.
    func relative(to outer: SpatialBox) -> SpatialBox {
        SpatialBox(
            rows: (rows.lowerBound - outer.rows.lowerBound)..<(rows.upperBound - outer.rows.lowerBound),
            columns: (columns.lowerBound - outer.columns.lowerBound)..<(columns.upperBound - outer.columns.lowerBound))
    }
}

/// Why a patch plan cannot be made; each case names the tensor, node or number at fault.
public struct PatchPlanError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case unknownTensor
        case notSpatial
        case branchCrossesStageEnd
        case gridTooLarge
        case budgetTooSmall(smallestFeasibleBytes: Int)
    }

    public let reason: Reason
    public let description: String

    public init(reason: Reason, description: String) {
        self.reason = reason
        self.description = description
    }
}

/// How a patch-based run of a model is laid out, and what it costs: the patch stage (every node
/// up to `stageEnd`) runs patch by patch into the stage's output tensor, the rest layer by
/// layer. Made by ``PatchPlanner``; run by ``PatchPlan/run(_:pool:workspace:)``.
///
/// Memory counts what a run holds for activations: the model input, the stage's output, and
/// the arena of the part running (one patch's arena with its input cut out of the image, or
/// the arena of the layer-by-layer rest). Weights and the kernels' scratch are not counted.
public struct PatchPlan: Sendable {
    /// One layer of the patch stage, for the largest patch: how many rows and columns of its
    /// input it reads to make its output patch; the difference is the halo.
    public struct Layer: Sendable, Equatable {
        public let node: String
        public let opType: String
        public let output: (rows: Int, columns: Int)
        public let input: (rows: Int, columns: Int)

        public static func == (a: Layer, b: Layer) -> Bool {
            a.node == b.node && a.output == b.output && a.input == b.input
        }
    }

    /// The tensor the patch stage ends at.
    public let stageEnd: String
    /// Its type.
    public let stageType: TensorType
    public let grid: PatchGrid
    /// The patch stage's layers (windowed ones and the pointwise ones between them).
    public let layers: [Layer]
    /// Bytes held while the patch stage runs, and while the rest does; ``peakBytes`` is the larger.
    public let patchStageBytes: Int
    public let layerStageBytes: Int
    /// Multiply-adds of one patched run (halos computed twice), and of the layer-by-layer run.
    public let multiplyAdds: Int
    public let baselineMultiplyAdds: Int
    /// How many different patch programs the grid needs (patches of one shape and padding share one).
    public var programCount: Int { programs.count }

    public var peakBytes: Int { max(patchStageBytes, layerStageBytes) }
    /// Extra multiply-adds as a share of the layer-by-layer run's (0.1 = 10% more).
    public var extraMultiplyAddShare: Double {
        Double(multiplyAdds - baselineMultiplyAdds) / Double(max(baselineMultiplyAdds, 1))
    }

    struct Patch: Sendable {
        /// The patch of the stage's output it makes, and the box of the model input it reads.
        let output: SpatialBox
        let input: SpatialBox
        let program: Int
    }

    let inputName: String
    let inputType: TensorType
    let patches: [Patch]
    /// One plan per distinct patch program; each reads the patch input and makes the output patch.
    let programs: [ExecutionPlan]
    /// The layer-by-layer rest, from the stage's tensor to the graph outputs (`nil` when the
    /// stage ends at the only output).
    let rest: ExecutionPlan?
    /// Graph outputs, in order; the stage's tensor may be one of them.
    let outputNames: [String]

    /// Patches in the grid (rows × columns).
    public var patchCount: Int { patches.count }

    /// Whether the model ends at the stage end, so that each patch's output is a finished part
    /// of the model's only output (a head whose cut is the stage end).
    public var endsAtStageEnd: Bool { rest == nil && outputNames == [stageEnd] }

    // MARK: - Running

    /// Runs the model on `inputs` patch by patch, then the rest layer by layer, and returns
    /// every graph output by name (the same values as the layer-by-layer run).
    ///
    /// `onPatch` sees each patch's part of the stage tensor as soon as it is
    /// computed, with its rows and columns in the stage tensor (the part is valid only during
    /// the call): a split agent whose cut is the stage end sends it while the next patch runs.
    public func run(
        _ inputs: [String: Tensor], pool: ThreadPool, workspace: PatchWorkspace,
        onPatch: (_ part: Tensor, _ rows: Range<Int>, _ columns: Range<Int>) throws -> Void = { _, _, _ in }
    ) throws -> [String: Tensor] {
        guard let image = inputs[inputName] else {
            throw ONNXError.missingInput("the model needs input '\(inputName)', which was not given")
        }
        guard image.shape == inputType.shape, image.dtype == inputType.dtype else {
            throw ONNXError.shapeMismatch(inputName, op: "input", "the patch plan was made for \(inputType), got \(image.dtype)\(image.shape)")
        }
        let stage = workspace.stageTensor(stageType)
        for patch in patches {
            let program = programs[patch.program]
            let patchShape = Array(inputType.shape.dropLast(2)) + [patch.input.rows.count, patch.input.columns.count]
            let patchBytes = TensorType(patchShape, inputType.dtype).byteCount
            // The patch's input lies after the program's arena, in the same block.
            let block = workspace.working.arena(bytes: program.arenaBytes + MemoryPlanner.aligned(patchBytes))
            let patchInput = Tensor(
                shape: patchShape, dtype: inputType.dtype,
                storage: TensorStorage(viewOf: block, offset: program.arenaBytes, byteCount: patchBytes))
            Layout.copyWindow(
                of: image, from: (patch.input.rows.lowerBound, patch.input.columns.lowerBound), into: patchInput, at: (0, 0),
                size: (patch.input.rows.count, patch.input.columns.count))
            let made = try program.runInPlace([inputName: patchInput], pool: pool, workspace: workspace.working)
            guard let output = made[stageEnd] else { throw ONNXError.invalidModel("a patch program did not make '\(stageEnd)'") }
            Layout.copyWindow(
                of: output, from: (0, 0), into: stage, at: (patch.output.rows.lowerBound, patch.output.columns.lowerBound),
                size: (patch.output.rows.count, patch.output.columns.count))
            let (rows, columns) = (patch.output.rows, patch.output.columns)
            var part = output
            if output.shape[2] != rows.count || output.shape[3] != columns.count {
                part = Tensor(zeros: Array(output.shape.dropLast(2)) + [rows.count, columns.count], dtype: output.dtype)
                Layout.copyWindow(of: output, from: (0, 0), into: part, at: (0, 0), size: (rows.count, columns.count))
            }
            try onPatch(part, rows, columns)
        }
        var results = try rest?.run([stageEnd: stage], pool: pool, workspace: workspace.working) ?? [:]
        if outputNames.contains(stageEnd) { results[stageEnd] = stage.copy() }
        return results
    }
}

/// The memory patch-based runs work in, kept between runs: the stage's output tensor, and one
/// arena that every patch program and the rest share (it grows to the largest of them).
public final class PatchWorkspace: @unchecked Sendable {
    let working = Workspace()
    private var stage: TensorStorage?

    public init() {}

    /// Bytes held now: the stage tensor and the shared arena (the kernels' scratch apart).
    public var byteCount: Int { (stage?.byteCount ?? 0) + working.arenaByteCount }

    /// The kernels' scratch buffer held now (im2col, Winograd tiles), in bytes.
    public var scratchByteCount: Int { working.scratch.byteCount }

    func stageTensor(_ type: TensorType) -> Tensor {
        if stage == nil || stage!.byteCount < type.byteCount { stage = TensorStorage(byteCount: type.byteCount) }
        return Tensor(shape: type.shape, dtype: type.dtype, storage: TensorStorage(viewOf: stage!, offset: 0, byteCount: type.byteCount))
    }
}

/// Copies a spatial window of its input: inserted into a patch program where a tensor's patch
/// is larger than what one of its readers needs (a shortcut beside a convolution's halo).
struct SpatialCropKernel: OperatorKernel {
    let node: String
    let box: SpatialBox

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        guard x.shape.count == 4, box.rows.upperBound <= x.shape[2], box.columns.upperBound <= x.shape[3] else {
            throw ONNXError.shapeMismatch(node, op: "crop", "window \(box) does not fit in \(x)")
        }
        return [TensorType([x.shape[0], x.shape[1], box.rows.count, box.columns.count], x.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        Layout.copyWindow(
            of: inputs[0]!, from: (box.rows.lowerBound, box.columns.lowerBound), into: outputs[0], at: (0, 0),
            size: (box.rows.count, box.columns.count))
    }
}
