import CleaveSupport
import CleaveTensor
import Synchronization

/// Runs a loaded model: plans once per input signature, then executes requests.
///
/// Safe to share between tasks: plans are cached under a mutex, and each run
/// gets its own activation arena.
public final class InferenceSession: Sendable {
    /// The model this session runs: as loaded, or after ``GraphOptimizer`` when optimizing
    /// (same inputs and outputs; fused nodes and their intermediate tensors are gone).
    public var model: Model { executionModel }
    let executionModel: Model
    /// How many BatchNormalization nodes were folded, activations fused and Adds (residual
    /// shortcuts) fused into convolutions (0 without optimization).
    public let foldedBatchNorms: Int
    public let fusedActivations: Int
    public let fusedResiduals: Int
    /// How many convolutions run by Winograd on filters transformed when the session was made.
    public let winogradConvolutions: Int
    /// Threads each operator may use.
    public let pool: ThreadPool
    /// Graph inputs whose values (not only shapes) decide tensor shapes; their
    /// values are part of the plan key.
    let valueInputNames: Set<String>
    private let plans = Mutex<[PlanKey: ExecutionPlan]>([:])
    /// Whether the executed graph is the fused one.
    public let isOptimized: Bool
    /// Arenas and scratch buffers of finished runs, reused by the next ones (one per concurrent run).
    private let workspaces = Mutex<[Workspace]>([])

    /// A session for `model` using `threads` threads (`nil`: one per core).
    ///
    /// With `optimize` (the default) it runs the graph with BatchNormalization folded into
    /// convolutions, activations and residual Adds fused, and 3×3 filters pre-transformed for Winograd; tensors between fused nodes then do not exist in
    /// plans (graph outputs always do). `optimize: false` runs the graph as written: the
    /// reference the fused path is tested against.
    public init(model: Model, threads: Int? = nil, optimize: Bool = true) {
        let (rewritten, report) = optimize ? GraphOptimizer.optimize(model) : (model, GraphOptimizer.Report())
        executionModel = rewritten
        isOptimized = optimize
        foldedBatchNorms = report.foldedBatchNorms
        fusedActivations = report.fusedActivations
        fusedResiduals = report.fusedResiduals
        winogradConvolutions = report.winogradFilters
        pool = ThreadPool(threads: threads)
        valueInputNames = Self.findValueInputs(rewritten)
    }

    /// Loads the model at `path` and makes a session for it.
    public convenience init(contentsOf path: String, threads: Int? = nil, optimize: Bool = true) throws {
        self.init(model: try Model(contentsOf: path), threads: threads, optimize: optimize)
    }

    /// Operator counts of the executed graph (after fusion), by operator name.
    public var executedOperatorCounts: [String: Int] {
        executionModel.graph.nodes.reduce(into: [:]) { $0[$1.opType, default: 0] += 1 }
    }

    // MARK: - Planning

    /// The declared input types, with symbolic dimensions set to `symbolic`.
    public func declaredInputTypes(symbolic: Int = 1) throws -> [String: TensorType] {
        var types: [String: TensorType] = [:]
        for input in model.graph.inputs {
            guard let dtype = input.dtype, let shape = input.concreteShape(symbolic: symbolic) else {
                throw ONNXError.unsupportedTensor(input.name, "the model does not declare a supported type and shape for this input")
            }
            types[input.name] = TensorType(shape, dtype)
        }
        return types
    }

    /// The plan for inputs of these types (and these values, for inputs that decide shapes).
    public func plan(for types: [String: TensorType], values: [String: Tensor] = [:]) throws -> ExecutionPlan {
        let relevant = values.filter { valueInputNames.contains($0.key) }
        let key = PlanKey(types: types, values: relevant.mapValues { $0.bytes() })
        if let cached = plans.withLock({ $0[key] }) { return cached }
        let plan = try ExecutionPlan.make(model: executionModel, inputTypes: types, inputValues: relevant)
        plans.withLock { $0[key] = plan }
        return plan
    }

    // MARK: - Running

    /// Runs the model on `inputs` (by input name) and returns every graph output by name.
    ///
    /// - Throws: ``ONNXError`` when an input is missing or does not fit the model.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        var types: [String: TensorType] = [:]
        for declared in model.graph.inputs {
            guard let tensor = inputs[declared.name] else {
                throw ONNXError.missingInput("the model needs input '\(declared.name)', which was not given")
            }
            if let dtype = declared.dtype, dtype != tensor.dtype {
                throw ONNXError.shapeMismatch(declared.name, op: "input", "expected \(dtype), got \(tensor.dtype)")
            }
            if let dimensions = declared.dimensions {
                let fits =
                    dimensions.count == tensor.rank
                    && zip(dimensions, tensor.shape).allSatisfy { if case .fixed(let size) = $0 { size == $1 } else { true } }
                guard fits else {
                    throw ONNXError.shapeMismatch(
                        declared.name, op: "input", "expected shape \(dimensions.map(\.description)), got \(tensor.shape)")
                }
            }
            types[declared.name] = TensorType(tensor.shape, tensor.dtype)
        }
        return try withWorkspace { try plan(for: types, values: inputs).run(inputs, pool: pool, workspace: $0) }
    }

    /// Fills the kept arenas with NaNs (tests: the next run must not depend on their contents).
    func poisonWorkspaces() {
        workspaces.withLock { $0.forEach { $0.poison() } }
    }

    /// Runs `body` with a workspace of an earlier run (or a new one) and keeps it afterwards.
    private func withWorkspace<T>(_ body: (Workspace) throws -> T) rethrows -> T {
        let workspace = workspaces.withLock { $0.popLast() } ?? Workspace()
        defer { workspaces.withLock { $0.append(workspace) } }
        return try body(workspace)
    }

    // MARK: - Profiling

    /// Time spent in one node, summed over profiled runs.
    public struct NodeTiming: Sendable {
        /// Node name and operator.
        public let node: String
        public let opType: String
        /// Total time over all runs, in milliseconds.
        public let milliseconds: Double
    }

    /// Runs the model `runs` times on `inputs` and returns the time spent in each executed node
    /// (constant-folded nodes take no time per run and are not listed).
    public func profile(_ inputs: [String: Tensor], runs: Int) throws -> [NodeTiming] {
        _ = try run(inputs)
        let types = inputs.mapValues { TensorType($0.shape, $0.dtype) }
        let plan = try plan(for: types, values: inputs)
        var totals = [Duration](repeating: .zero, count: plan.steps.count)
        for _ in 0..<max(runs, 1) {
            _ = try withWorkspace { try plan.run(inputs, pool: pool, workspace: $0) { index, elapsed in totals[index] += elapsed } }
        }
        return plan.steps.enumerated().map { index, step in
            let node = executionModel.graph.nodes[step.node]
            return NodeTiming(node: node.name, opType: node.opType, milliseconds: totals[index].milliseconds)
        }
    }

    // MARK: - Shape-deciding inputs

    private static func findValueInputs(_ model: Model) -> Set<String> {
        let producers = model.graph.producers
        let graphInputs = Set(model.graph.inputs.map(\.name))
        var result: Set<String> = []
        var visited: Set<String> = []
        var pending: [String] = []
        for (index, node) in model.graph.nodes.enumerated() {
            for position in model.kernels[index].valueInputs where position < node.inputs.count {
                pending.append(node.inputs[position])
            }
        }
        while let name = pending.popLast() {
            guard !name.isEmpty, visited.insert(name).inserted else { continue }
            if graphInputs.contains(name) { result.insert(name) }
            if let producer = producers[name], !(model.kernels[producer] is ShapeKernel) {
                pending.append(contentsOf: model.graph.nodes[producer].inputs)
            }
        }
        return result
    }
}

/// Identifies a plan: input types, plus the bytes of inputs that decide shapes.
struct PlanKey: Hashable, Sendable {
    let types: [String: TensorType]
    let values: [String: [UInt8]]
}

extension TensorType: Hashable {
    public func hash(into hasher: inout Hasher) {
        hasher.combine(shape)
        hasher.combine(dtype)
    }
}
