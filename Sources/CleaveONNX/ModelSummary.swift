import CleaveTensor

/// What `cleave model inspect` reports about a model: its interface, size, cost and cut points.
public struct ModelSummary: Sendable {
    /// A place where the model can be split, with the size of what would cross the network.
    public struct CutCandidate: Sendable {
        /// Tensor name.
        public let tensor: String
        /// Its type.
        public let type: TensorType
        /// Share of the model's FLOPs that the head would run (0–1).
        public let headFLOPShare: Double
    }

    /// Operator counts, sorted by name.
    public let operators: [(String, Int)]
    /// Number of weights (elements of all initializers).
    public let parameters: Int
    /// Floating-point operations of one run (multiply-add counts as two).
    public let flops: Int
    /// Planned activation arena, in bytes.
    public let arenaBytes: Int
    /// Largest total of simultaneously live activations, in bytes (the arena's lower bound).
    public let peakLiveBytes: Int
    /// Types of the graph inputs and outputs, in declaration order.
    public let inputs: [(String, TensorType)]
    public let outputs: [(String, TensorType)]
    /// Valid cut tensors in execution order.
    public let cuts: [CutCandidate]

    /// Summarizes `session`'s model for inputs of `types`.
    public init(session: InferenceSession, types: [String: TensorType]) throws {
        let model = session.model
        // Memory is what the session runs (fused or not); FLOPs and cut sizes come from every
        // tensor of the model as written, which a fused plan no longer has.
        let plan = try session.plan(for: types)
        let reference = session.isOptimized ? try InferenceSession(model: model, threads: 1, optimize: false).plan(for: types) : plan
        var counts: [String: Int] = [:]
        for node in model.graph.nodes { counts[node.opType, default: 0] += 1 }
        operators = counts.sorted { $0.key < $1.key }
        parameters = model.graph.initializers.values.reduce(0) { $0 + $1.count }
        let perNode = model.graph.nodes.map { Self.flops(of: $0, types: reference.types) }
        flops = perNode.reduce(0, +)
        arenaBytes = plan.arenaBytes
        peakLiveBytes = plan.peakLiveBytes
        inputs = model.graph.inputs.map { ($0.name, types[$0.name]!) }
        outputs = model.graph.outputs.compactMap { output in reference.types[output.name].map { (output.name, $0) } }
        let total = max(flops, 1)
        cuts = GraphCut.candidates(in: model).compactMap { name in
            guard let cut = try? GraphCut(model: model, at: name), let type = reference.types[name] else { return nil }
            let head = cut.headNodes.reduce(0) { $0 + perNode[$1] }
            return CutCandidate(tensor: name, type: type, headFLOPShare: Double(head) / Double(total))
        }
    }

    /// FLOPs of one node: 2·MACs for convolutions and matrix products, one per output element otherwise.
    static func flops(of node: Node, types: [String: TensorType]) -> Int {
        func shape(_ index: Int, output: Bool = false) -> [Int]? {
            let names = output ? node.outputs : node.inputs
            return index < names.count ? types[names[index]]?.shape : nil
        }
        guard let out = shape(0, output: true) else { return 0 }
        let outCount = out.reduce(1, *)
        switch node.opType {
        case "Conv":
            guard let w = shape(1) else { return outCount }
            return 2 * outCount * w[1...].reduce(1, *)
        case "ConvTranspose":
            guard let x = shape(0), let w = shape(1) else { return outCount }
            return 2 * x.reduce(1, *) * w[1...].reduce(1, *)
        case "Gemm", "MatMul":
            guard let a = shape(0), shape(1) != nil else { return outCount }
            let transposedA = { if case .int(let value)? = node.attributes["transA"] { value != 0 } else { false } }()
            let k = node.opType == "Gemm" && transposedA ? a.first ?? 1 : a.last ?? 1
            return 2 * outCount * k
        default:
            return outCount
        }
    }
}
