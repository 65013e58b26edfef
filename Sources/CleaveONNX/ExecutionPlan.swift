import CleaveTensor

/// What one run of a model does for given input shapes: the steps left after
/// constant folding, the type of every tensor, and where each lives in the arena.
public struct ExecutionPlan: Sendable {
    enum Location: Sendable {
        case constant(Tensor)
        case input(String)
        case arena(offset: Int)
    }

    struct Value: Sendable {
        let name: String
        let type: TensorType
        var location: Location
    }

    struct Step: Sendable {
        let node: Int
        let kernel: any OperatorKernel
        let inputs: [Int?]
        let outputs: [Int]
        /// The kernel may write its output over its first input (``OperatorKernel/overwritesInput(_:output:)``).
        var overwritesInput = false
    }

    let values: [Value]
    let steps: [Step]
    let outputIDs: [Int]

    /// Bytes of the activation arena.
    public let arenaBytes: Int
    /// The largest total size of intermediate tensors live at one step, in bytes:
    /// the lower bound for any arena.
    public let peakLiveBytes: Int
    /// Type of every tensor in the graph, by name (including folded constants).
    public let types: [String: TensorType]
    /// Number of nodes computed once at planning time (initializer-only subgraphs, `Shape`).
    public let foldedNodeCount: Int
    /// Indices (into the model's nodes) of the nodes executed per run.
    public var executedNodes: [Int] { steps.map(\.node) }

    // MARK: - Planning

    static func make(model: Model, inputTypes: [String: TensorType], inputValues: [String: Tensor]) throws -> ExecutionPlan {
        var values: [Value] = []
        var ids: [String: Int] = [:]
        var known: [Int: Tensor] = [:]

        func add(_ name: String, _ type: TensorType, _ location: Location) -> Int {
            values.append(Value(name: name, type: type, location: location))
            if !name.isEmpty { ids[name] = values.count - 1 }
            return values.count - 1
        }
        for (name, tensor) in model.graph.initializers {
            known[add(name, TensorType(tensor.shape, tensor.dtype), .constant(tensor))] = tensor
        }
        for input in model.graph.inputs {
            guard let type = inputTypes[input.name] else {
                throw ONNXError.missingInput("the model needs input '\(input.name)', which was not given")
            }
            guard type.isHoldable else { throw ONNXError.invalidModel("input '\(input.name)' of type \(type) is too large to hold") }
            let id = add(input.name, type, .input(input.name))
            if let value = inputValues[input.name] { known[id] = value }
        }

        var steps: [Step] = []
        var folded = 0
        let context = ExecutionContext(pool: ThreadPool(threads: 1))
        for (index, node) in model.graph.nodes.enumerated() {
            let kernel = model.kernels[index]
            let inputIDs: [Int?] = node.inputs.map { $0.isEmpty ? nil : ids[$0] }
            let infos: [InputInfo?] = inputIDs.map { id in
                id.map { InputInfo(name: values[$0].name, type: values[$0].type, value: known[$0]) }
            }
            let outputTypes = try kernel.outputTypes(infos)
            if let huge = outputTypes.first(where: { !$0.isHoldable }) {
                throw ONNXError.invalidNode(node.name, op: node.opType, "would make a tensor of type \(huge), too large to hold")
            }
            guard node.outputs.count <= outputTypes.count else {
                throw ONNXError.invalidNode(
                    node.name, op: node.opType, "declares \(node.outputs.count) outputs, the operator makes \(outputTypes.count)")
            }
            if let shapeKernel = kernel as? ShapeKernel, let id = inputIDs.first ?? nil {
                let value = shapeKernel.value(for: values[id].type.shape)
                known[add(node.outputs[0], outputTypes[0], .constant(value))] = value
                folded += 1
                continue
            }
            if inputIDs.allSatisfy({ $0 == nil || known[$0!] != nil }) {
                let inputs = inputIDs.map { $0.flatMap { known[$0] } }
                let outputs = outputTypes.prefix(max(node.outputs.count, 1)).map { Tensor(zeros: $0.shape, dtype: $0.dtype) }
                try kernel.run(inputs, outputs, context)
                for (position, output) in node.outputs.enumerated() {
                    let id = add(output, outputTypes[position], .constant(outputs[position]))
                    known[id] = outputs[position]
                }
                folded += 1
                continue
            }
            let outputIDs = (0..<max(node.outputs.count, 1)).map { position in
                add(position < node.outputs.count ? node.outputs[position] : "", outputTypes[position], .arena(offset: 0))
            }
            steps.append(
                Step(
                    node: index, kernel: try kernel.specialized(for: infos), inputs: inputIDs, outputs: outputIDs,
                    overwritesInput: kernel.overwritesInput(infos, output: outputTypes[0])))
        }

        let outputIDs = try model.graph.outputs.map { output in
            guard let id = ids[output.name] else { throw ONNXError.invalidModel("graph output '\(output.name)' is never produced") }
            return id
        }
        let (placed, arenaBytes, peak) = placeInArena(values: values, steps: steps, outputs: outputIDs)
        for (id, offset) in placed { values[id].location = .arena(offset: offset) }
        var types: [String: TensorType] = [:]
        for value in values where !value.name.isEmpty { types[value.name] = value.type }
        return ExecutionPlan(
            values: values, steps: steps, outputIDs: outputIDs, arenaBytes: arenaBytes, peakLiveBytes: peak,
            types: types, foldedNodeCount: folded)
    }

    private static func placeInArena(values: [Value], steps: [Step], outputs: [Int]) -> ([Int: Int], Int, Int) {
        var first: [Int: Int] = [:]
        var last: [Int: Int] = [:]
        for (index, step) in steps.enumerated() {
            for id in step.outputs {
                first[id] = index
                last[id] = index
            }
            for id in step.inputs.compactMap({ $0 }) where first[id] != nil { last[id] = index }
        }
        for id in outputs where first[id] != nil { last[id] = steps.count }
        // An output written over its input (an in-place depthwise convolution) shares the
        // input's block when this step is the input's last reader and reads it once.
        var owner: [Int: Int] = [:]
        func root(_ id: Int) -> Int { owner[id].map(root) ?? id }
        for (index, step) in steps.enumerated() where step.overwritesInput {
            guard let input = step.inputs.first ?? nil, first[input] != nil, last[input] == index,
                step.inputs.filter({ $0 == input }).count == 1, values[input].type.byteCount == values[step.outputs[0]].type.byteCount
            else { continue }
            owner[step.outputs[0]] = root(input)
        }
        var members: [Int: [Int]] = [:]
        for id in first.keys { members[root(id), default: []].append(id) }
        let roots = members.keys.sorted()
        let blocks = roots.map { id in
            let group = members[id]!
            return MemoryPlanner.Block(
                bytes: group.map { values[$0].type.byteCount }.max()!, first: group.map { first[$0]! }.min()!,
                last: group.map { last[$0]! }.max()!)
        }
        let (offsets, arena) = MemoryPlanner.place(blocks)
        var placed: [Int: Int] = [:]
        for (id, offset) in zip(roots, offsets) { for member in members[id]! { placed[member] = offset } }
        return (placed, arena, MemoryPlanner.peakLiveBytes(blocks))
    }

    // MARK: - Running

    /// Runs the steps in `workspace`'s memory; `timings`, when given, receives each step's index
    /// and duration.
    func run(
        _ inputs: [String: Tensor], pool: ThreadPool, workspace: Workspace = Workspace(), timings: ((Int, Duration) -> Void)? = nil
    ) throws -> [String: Tensor] {
        try runInPlace(inputs, pool: pool, workspace: workspace, timings: timings).mapValues { $0.copy() }
    }

    /// Runs the steps and returns the graph outputs where they lie: views into `workspace`'s
    /// arena, valid until the workspace's next run (patch execution copies them into the
    /// stage's tensor itself).
    func runInPlace(
        _ inputs: [String: Tensor], pool: ThreadPool, workspace: Workspace, timings: ((Int, Duration) -> Void)? = nil
    ) throws -> [String: Tensor] {
        let arena = workspace.arena(bytes: arenaBytes)
        var tensors = [Tensor?](repeating: nil, count: values.count)
        for (id, value) in values.enumerated() {
            switch value.location {
            case .constant(let tensor): tensors[id] = tensor
            case .input(let name): tensors[id] = inputs[name]
            case .arena(let offset):
                let storage = TensorStorage(viewOf: arena, offset: offset, byteCount: value.type.byteCount)
                tensors[id] = Tensor(shape: value.type.shape, dtype: value.type.dtype, storage: storage)
            }
        }
        pool.configureBLASForOwnThreads()
        let context = ExecutionContext(pool: pool, scratch: workspace.scratch)
        let clock = ContinuousClock()
        for (index, step) in steps.enumerated() {
            let inputs = step.inputs.map { $0.flatMap { tensors[$0] } }
            let outputs = step.outputs.map { tensors[$0]! }
            if let timings {
                let elapsed = try clock.measure { try step.kernel.run(inputs, outputs, context) }
                timings(index, elapsed)
            } else {
                try step.kernel.run(inputs, outputs, context)
            }
        }
        var result: [String: Tensor] = [:]
        for id in outputIDs { result[values[id].name] = tensors[id]! }
        return result
    }
}

/// The memory one run works in: the activation arena and the kernels' scratch buffer. A
/// session keeps them between runs, so that steady-state inference allocates nothing.
final class Workspace: @unchecked Sendable {
    private var storage: TensorStorage?
    let scratch = ScratchBuffer()

    /// Bytes of the arena held now.
    var arenaByteCount: Int { storage?.byteCount ?? 0 }

    /// An arena of at least `bytes` (its contents are whatever the last run left).
    func arena(bytes: Int) -> TensorStorage {
        if let storage, storage.byteCount >= bytes { return storage }
        let grown = TensorStorage(byteCount: bytes)
        storage = grown
        return grown
    }

    /// Fills the arena with NaNs, so that a test can show no kernel relies on what the last
    /// run left there (or on zeros).
    func poison() {
        guard let storage else { return }
        storage.fill(byte: 0xFF)
    }
}
