import CleaveTensor

/// How a model should run within an activation-memory budget.
public enum PatchChoice: Sendable {
    /// The whole model layer by layer fits; `peakBytes` is what it holds.
    case layerByLayer(peakBytes: Int)
    /// The first layers run patch by patch.
    case patched(PatchPlan)
}

/// Plans patch-based execution (MCUNetV2's idea): the first layers of a CNN hold its largest
/// activations, so they run one output patch at a time, each from its input region plus the
/// halo found by walking the receptive field backwards, into the stage's output tensor; the
/// rest runs layer by layer.
///
/// The planner works on the graph a session executes (fused when the session optimizes), so
/// patches run the same kernels; each distinct patch (shape and padding) gets its own
/// ``ExecutionPlan``, whose memory planner sizes its arena.
public struct PatchPlanner: Sendable {
    let model: Model
    let inputTypes: [String: TensorType]
    let types: [String: TensorType]
    /// Bytes the layer-by-layer run holds: the input and the plan's arena.
    public let layerByLayerBytes: Int
    /// Multiply-adds of the layer-by-layer run.
    public let baselineMultiplyAdds: Int
    let inputBytes: Int

    /// A planner for `session`'s executed graph with inputs of `inputTypes` (default: the
    /// declared types, batch 1).
    public init(session: InferenceSession, inputTypes: [String: TensorType]? = nil) throws {
        model = session.executionModel
        self.inputTypes = try inputTypes ?? session.declaredInputTypes()
        let plan = try session.plan(for: self.inputTypes)
        types = plan.types
        inputBytes = self.inputTypes.values.reduce(0) { $0 + $1.byteCount }
        layerByLayerBytes = inputBytes + plan.arenaBytes
        baselineMultiplyAdds = Self.multiplyAdds(model, plan.types)
    }

    // MARK: - Choosing

    /// Layer by layer when it fits in `budget` bytes; otherwise, among the stage ends (or the
    /// given one) and `grids`, the patch plan that fits with the fewest multiply-adds (then
    /// the least memory).
    ///
    /// - Throws: ``PatchPlanError`` naming the smallest budget any plan meets when none fits.
    public func choose(budget: Int, stageEnd: String? = nil, grids: [PatchGrid] = PatchGrid.automatic) throws -> PatchChoice {
        if stageEnd == nil, layerByLayerBytes <= budget { return .layerByLayer(peakBytes: layerByLayerBytes) }
        if let stageEnd { _ = try stage(endingAt: stageEnd) }
        var best: PatchPlan?
        var smallest = layerByLayerBytes
        for end in stageEnd.map({ [$0] }) ?? stageEnds() {
            for grid in grids {
                guard let plan = try planIfGridFits(stageEnd: end, grid: grid) else { continue }
                smallest = min(smallest, plan.peakBytes)
                guard plan.peakBytes <= budget else { continue }
                if let current = best,
                    (current.multiplyAdds, current.peakBytes) <= (plan.multiplyAdds, plan.peakBytes)
                {
                    continue
                }
                best = plan
            }
        }
        guard let best else {
            throw PatchPlanError(
                reason: .budgetTooSmall(smallestFeasibleBytes: smallest),
                description:
                    "no plan fits in \(ByteCountText(budget)) of activation memory; the smallest feasible budget is \(ByteCountText(smallest)) "
                    + "(layer by layer needs \(ByteCountText(layerByLayerBytes)))")
        }
        return .patched(best)
    }

    /// The plans of `grids` for one stage end (grids larger than the stage's tensor left out).
    public func curve(stageEnd: String, grids: [PatchGrid] = PatchGrid.automatic) throws -> [PatchPlan] {
        _ = try stage(endingAt: stageEnd)
        return try grids.compactMap { try planIfGridFits(stageEnd: stageEnd, grid: $0) }
    }

    /// The plan, or nil for a grid with more patches than the stage's tensor has rows or
    /// columns; any other failure is an error, not a grid left out.
    private func planIfGridFits(stageEnd: String, grid: PatchGrid) throws -> PatchPlan? {
        do {
            return try plan(stageEnd: stageEnd, grid: grid)
        } catch let error as PatchPlanError where error.reason == .gridTooLarge {
            return nil
        }
    }

    /// Every tensor a patch stage can end at, in execution order: made from one image input by
    /// spatially local layers only, with no other tensor of the stage read after it.
    public func stageEnds() -> [String] {
        model.graph.nodes.flatMap(\.outputs).filter { !$0.isEmpty && (try? stage(endingAt: $0)) != nil }
    }

    // MARK: - One plan

    /// The plan that runs every node up to `stageEnd` patch by patch on `grid`.
    public func plan(stageEnd end: String, grid: PatchGrid) throws -> PatchPlan {
        let stage = try stage(endingAt: end)
        let endType = types[end]!
        let (height, width) = (endType.shape[2], endType.shape[3])
        guard grid.rows <= height, grid.columns <= width else {
            throw PatchPlanError(
                reason: .gridTooLarge,
                description: "a \(grid) grid is larger than '\(end)', whose spatial size is \(height)x\(width): a patch would be empty")
        }
        var programIndex: [Program: Int] = [:]
        var programs: [ExecutionPlan] = []
        var programMACs: [Int] = []
        var programBytes: [Int] = []
        var patches: [PatchPlan.Patch] = []
        var layers: [PatchPlan.Layer] = []
        var largest = -1
        for row in 0..<grid.rows {
            for column in 0..<grid.columns {
                let box = SpatialBox(
                    rows: (row * height / grid.rows)..<((row + 1) * height / grid.rows),
                    columns: (column * width / grid.columns)..<((column + 1) * width / grid.columns))
                let walked = try walk(stage, box)
                let index: Int
                if let known = programIndex[walked.program] {
                    index = known
                } else {
                    let (plan, macs) = try build(walked.program, stage)
                    index = programs.count
                    programIndex[walked.program] = index
                    programs.append(plan)
                    programMACs.append(macs)
                    programBytes.append(plan.arenaBytes + MemoryPlanner.aligned(TensorType(walked.program.inputShape, .float32).byteCount))
                }
                if programBytes[index] > largest {
                    largest = programBytes[index]
                    layers = walked.layers
                }
                patches.append(PatchPlan.Patch(output: box, input: walked.input, program: index))
            }
        }
        let rest = try restPlan(stage)
        let restMACs = rest.map { Self.multiplyAdds($0.model, $0.plan.types) } ?? 0
        let held = inputBytes + endType.byteCount
        return PatchPlan(
            stageEnd: end, stageType: endType, grid: grid, layers: layers, patchStageBytes: held + largest,
            layerStageBytes: held + (rest?.plan.arenaBytes ?? 0),
            multiplyAdds: patches.reduce(restMACs) { $0 + programMACs[$1.program] }, baselineMultiplyAdds: baselineMultiplyAdds,
            inputName: stage.input, inputType: inputTypes[stage.input]!, patches: patches, programs: programs, rest: rest?.plan,
            outputNames: model.graph.outputs.map(\.name))
    }

    // MARK: - The stage

    /// The nodes up to a stage end and the rest, once checked.
    struct Stage {
        let end: String
        let nodes: [Int]
        let rest: [Int]
        /// The graph input the stage reads.
        let input: String
    }

    func stage(endingAt end: String) throws -> Stage {
        let graph = model.graph
        let producers = graph.producers
        func refuse(_ reason: PatchPlanError.Reason, _ text: String) -> PatchPlanError {
            PatchPlanError(reason: reason, description: "the patch stage cannot end at '\(end)': \(text)")
        }
        guard let producer = producers[end], types[end] != nil else {
            throw refuse(.unknownTensor, "no node of the executed graph makes it (stage ends: \(stageEndsHint()))")
        }
        var members: Set<Int> = []
        var pending = [producer]
        while let node = pending.popLast() {
            guard members.insert(node).inserted else { continue }
            for input in graph.nodes[node].inputs { if let source = producers[input] { pending.append(source) } }
        }
        let nodes = members.sorted()
        let graphInputs = Set(graph.inputs.map(\.name))
        var read: Set<String> = []
        var stageTensors: Set<String> = []
        for index in nodes {
            let node = graph.nodes[index]
            let kernel = model.kernels[index]
            let outputs = node.outputs.filter { !$0.isEmpty }
            guard Self.isSpatiallyLocal(kernel), outputs.count == 1, let output = types[outputs[0]], output.shape.count == 4,
                output.dtype == .float32
            else {
                throw refuse(
                    .notSpatial,
                    "node '\(node.name)' (\(node.opType)) before it does not compute each output from a spatial neighbourhood of float32 [N, C, H, W] tensors"
                )
            }
            stageTensors.insert(outputs[0])
            for (position, input) in node.inputs.enumerated() where !input.isEmpty {
                if graphInputs.contains(input) {
                    read.insert(input)
                    stageTensors.insert(input)
                }
                guard let type = types[input] else { continue }
                if let constant = graph.initializers[input] {
                    // Weights of windowed layers and per-channel parameters of a batch norm; a
                    // pointwise operand must not vary over H and W.
                    let aligned = [Int](repeating: 1, count: max(0, 4 - constant.rank)) + constant.shape
                    guard kernel is SlidingWindowKernel || kernel is BatchNormKernel || aligned.suffix(2).allSatisfy({ $0 == 1 }) else {
                        throw refuse(
                            .notSpatial, "node '\(node.name)' (\(node.opType)) before it reads '\(input)', a constant that varies over H and W")
                    }
                    continue
                }
                let windowed = kernel is SlidingWindowKernel && position == 0
                guard type.shape.count == 4, windowed || type.shape.suffix(2) == output.shape.suffix(2) else {
                    throw refuse(
                        .notSpatial, "node '\(node.name)' (\(node.opType)) before it broadcasts '\(input)' \(type) over its output \(output)")
                }
            }
        }
        guard read.count == 1, let input = read.first, inputTypes[input]?.shape.count == 4 else {
            throw refuse(.notSpatial, "the stage must read exactly one [N, C, H, W] graph input, it reads \(read.sorted())")
        }
        let rest = graph.nodes.indices.filter { !members.contains($0) }
        var crossing: Set<String> = []
        for index in rest {
            for name in graph.nodes[index].inputs where name != end && stageTensors.contains(name) { crossing.insert(name) }
        }
        for output in graph.outputs where output.name != end && stageTensors.contains(output.name) { crossing.insert(output.name) }
        guard crossing.isEmpty else {
            throw refuse(
                .branchCrossesStageEnd,
                "\(crossing.sorted().map { "'\($0)'" }.joined(separator: ", ")) of the stage \(crossing.count == 1 ? "is" : "are") "
                    + "read after it (a branch crosses the stage end); end the stage where every branch has joined")
        }
        return Stage(end: end, nodes: nodes, rest: rest, input: input)
    }

    private func stageEndsHint() -> String {
        let ends = stageEnds()
        return ends.isEmpty ? "none" : ends.prefix(8).map { "'\($0)'" }.joined(separator: ", ") + (ends.count > 8 ? ", …" : "")
    }

    static func isSpatiallyLocal(_ kernel: any OperatorKernel) -> Bool {
        switch kernel {
        case is SlidingWindowKernel, is ActivationKernel, is ClipKernel, is BinaryKernel: true
        case let identity as IdentityKernel: !identity.hasMask
        case let batchNorm as BatchNormKernel: !batchNorm.training
        default: false
        }
    }

    // MARK: - One patch

    /// What one patch runs: its input's shape and, per stage node, the padding of a windowed
    /// layer and the crops of inputs larger than the node reads. Patches with equal programs
    /// share one plan.
    struct Program: Hashable {
        struct Step: Hashable {
            let node: Int
            let pads: [Int]?
            let crops: [SpatialBox?]
        }
        let inputShape: [Int]
        let steps: [Step]
    }

    /// Walks the receptive field of the output patch `box` backwards through the stage: the box
    /// of every tensor the patch needs (the union of what its readers need), and per windowed
    /// layer the padding that the patch's window has where it meets the tensor's edge.
    func walk(_ stage: Stage, _ box: SpatialBox) throws -> (program: Program, input: SpatialBox, layers: [PatchPlan.Layer]) {
        let graph = model.graph
        var need: [String: SpatialBox] = [stage.end: box]
        var reads: [Int: [SpatialBox?]] = [:]
        var pads: [Int: [Int]] = [:]
        for index in stage.nodes.reversed() {
            let node = graph.nodes[index]
            let kernel = model.kernels[index]
            guard let out = need[node.outputs.first { !$0.isEmpty }!] else { continue }
            var boxes: [SpatialBox?] = []
            for (position, name) in node.inputs.enumerated() {
                guard !name.isEmpty, graph.initializers[name] == nil, let type = types[name], type.shape.count == 4 else {
                    boxes.append(nil)
                    continue
                }
                var read = out
                if position == 0, let window = kernel as? SlidingWindowKernel {
                    let geometry = try window.geometry(node.inputs.map { types[$0] })
                    guard geometry.kernel.count == 2 else {
                        throw PatchPlanError(reason: .notSpatial, description: "node '\(node.name)' is not a 2-D window")
                    }
                    let rows = try Self.reach(out.rows, geometry, axis: 0, size: type.shape[2], node: node.name)
                    let columns = try Self.reach(out.columns, geometry, axis: 1, size: type.shape[3], node: node.name)
                    pads[index] = [rows.pads.begin, columns.pads.begin, rows.pads.end, columns.pads.end]
                    read = SpatialBox(rows: rows.range, columns: columns.range)
                }
                boxes.append(read)
                need[name] = need[name].map { $0.union(read) } ?? read
            }
            reads[index] = boxes
        }
        let input = need[stage.input]!
        let steps = stage.nodes.map { index in
            let node = graph.nodes[index]
            let crops = reads[index]!.enumerated().map { position, read in
                read.flatMap { read in
                    let held = need[node.inputs[position]]!
                    return read == held ? nil : read.relative(to: held)
                }
            }
            return Program.Step(node: index, pads: pads[index], crops: crops)
        }
        let layers = stage.nodes.map { index in
            let node = graph.nodes[index]
            let out = need[node.outputs.first { !$0.isEmpty }!]!
            let read = reads[index]!.compactMap { $0 }.first ?? out
            return PatchPlan.Layer(
                node: node.name, opType: node.opType, output: (out.rows.count, out.columns.count),
                input: (read.rows.count, read.columns.count))
        }
        let shape = Array(inputTypes[stage.input]!.shape.dropLast(2)) + [input.rows.count, input.columns.count]
        return (Program(inputShape: shape, steps: steps), input, layers)
    }

    /// The input positions a window reads for outputs `out` on one axis, clipped to the tensor,
    /// and the padding the clipped part leaves on each side: MCUNetV2's backward walk (stride 1:
    /// r + k − 1; stride 2: 2(r − 1) + k), with dilation and the layer's own padding.
    static func reach(_ out: Range<Int>, _ geometry: WindowGeometry, axis: Int, size: Int, node: String) throws
        -> (range: Range<Int>, pads: (begin: Int, end: Int))
    {
        let extent = (geometry.kernel[axis] - 1) * geometry.dilations[axis] + 1
        let first = out.lowerBound * geometry.strides[axis] - geometry.padsBegin[axis]
        let end = (out.upperBound - 1) * geometry.strides[axis] - geometry.padsBegin[axis] + extent
        let low = max(first, 0)
        let high = min(end, size)
        guard high > low else {
            throw PatchPlanError(reason: .notSpatial, description: "node '\(node)': a patch's window would read padding only")
        }
        return (low..<high, (low - first, end - high))
    }

    /// The plan of one patch program: the stage's nodes with the patch's padding, crops where a
    /// tensor's patch is larger than a reader needs, and the memory planner's arena.
    func build(_ program: Program, _ stage: Stage) throws -> (ExecutionPlan, multiplyAdds: Int) {
        let graph = model.graph
        var nodes: [Node] = []
        var kernels: [any OperatorKernel] = []
        for step in program.steps {
            let node = graph.nodes[step.node]
            var inputs = node.inputs
            for (position, crop) in step.crops.enumerated() {
                guard let crop else { continue }
                let name = "\(node.inputs[position])::crop::\(nodes.count)"
                nodes.append(
                    Node(
                        name: name, opType: "PatchCrop", domain: "cleave", inputs: [node.inputs[position]], outputs: [name],
                        attributes: [:], sourceIndex: -1))
                kernels.append(SpatialCropKernel(node: name, box: crop))
                inputs[position] = name
            }
            nodes.append(
                Node(
                    name: node.name, opType: node.opType, domain: node.domain, inputs: inputs, outputs: node.outputs,
                    attributes: node.attributes, sourceIndex: node.sourceIndex))
            let kernel = model.kernels[step.node]
            if let pads = step.pads, let window = kernel as? any SlidingWindowKernel {
                kernels.append(window.withPads(pads))
            } else {
                kernels.append(kernel)
            }
        }
        let input = ValueDeclaration(name: stage.input, dtype: .float32, dimensions: program.inputShape.map { .fixed($0) })
        let sub = subModel(
            nodes: nodes, kernels: kernels, input: input, outputs: [ValueDeclaration(name: stage.end, dtype: .float32, dimensions: nil)])
        let plan = try ExecutionPlan.make(
            model: sub, inputTypes: [stage.input: TensorType(program.inputShape, .float32)], inputValues: [:])
        return (plan, Self.multiplyAdds(sub, plan.types))
    }

    /// The layer-by-layer rest after the stage, reading the stage's tensor.
    func restPlan(_ stage: Stage) throws -> (model: Model, plan: ExecutionPlan)? {
        guard !stage.rest.isEmpty else { return nil }
        let graph = model.graph
        let type = types[stage.end]!
        let input = ValueDeclaration(name: stage.end, dtype: type.dtype, dimensions: type.shape.map { .fixed($0) })
        let sub = subModel(
            nodes: stage.rest.map { graph.nodes[$0] }, kernels: stage.rest.map { model.kernels[$0] }, input: input, outputs: graph.outputs)
        return (sub, try ExecutionPlan.make(model: sub, inputTypes: [stage.end: type], inputValues: [:]))
    }

    private func subModel(nodes: [Node], kernels: [any OperatorKernel], input: ValueDeclaration, outputs: [ValueDeclaration]) -> Model {
        let used = Set(nodes.flatMap(\.inputs))
        let graph = Graph(
            nodes: nodes, inputs: [input], outputs: outputs, initializers: model.graph.initializers.filter { used.contains($0.key) })
        return Model(rewriting: model, graph: graph, kernels: kernels)
    }

    // MARK: - Cost

    /// Multiply-adds of convolutions and matrix products in `model` for the plan's `types`.
    static func multiplyAdds(_ model: Model, _ types: [String: TensorType]) -> Int {
        zip(model.graph.nodes, model.kernels).reduce(0) { total, pair in
            let (node, kernel) = pair
            guard let output = node.outputs.first.flatMap({ types[$0] }) else { return total }
            if let conv = kernel as? ConvKernel, node.inputs.count > 1, let weight = types[node.inputs[1]] {
                return total + output.shape.reduce(1, *) * conv.declaredWeightShape(weight.shape).dropFirst().reduce(1, *)
            }
            switch node.opType {
            case "ConvTranspose", "Gemm", "MatMul": return total + ModelSummary.flops(of: node, types: types) / 2
            default: return total
            }
        }
    }
}

/// A byte count as people read it: `172.0 KiB`, `1.31 MiB`.
public struct ByteCountText: CustomStringConvertible, Sendable {
    public let bytes: Int

    public init(_ bytes: Int) { self.bytes = bytes }

    public var description: String {
        let value = Double(bytes)
        if bytes < 1024 { return "\(bytes) B" }
        if bytes < 1024 * 1024 { return Self.format(value / 1024, "KiB") }
        return Self.format(value / (1024 * 1024), "MiB")
    }

    private static func format(_ value: Double, _ unit: String) -> String {
        let rounded = (value * 10).rounded() / 10
        return "\(rounded) \(unit)"
    }

    /// Parses `256KiB`, `1.5M`, `64kb`, `65536`: a number and an optional binary unit (B, K or
    /// KiB, M or MiB, G or GiB; case and a trailing `B` do not matter, and kB is 1024 bytes too);
    /// `nil` for anything else.
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.filter { $0 != " " }
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value >= 0 else { return nil }
        let scale: Double? =
            switch trimmed.dropFirst(digits.count).lowercased() {
            case "", "b": 1
            case "k", "kb", "kib": 1024
            case "m", "mb", "mib": 1024 * 1024
            case "g", "gb", "gib": 1024 * 1024 * 1024
            default: nil
            }
        guard let scale else { return nil }
        return Int((value * scale).rounded())
    }
}
