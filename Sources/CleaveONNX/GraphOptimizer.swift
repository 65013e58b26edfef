import CleaveTensor

/// Rewrites a graph for execution: folds inference-mode BatchNormalization into the
/// preceding convolution's weights and bias, and fuses a following activation
/// (Relu, LeakyRelu, Clip with constant bounds, Sigmoid, Tanh, HardSigmoid, HardSwish)
/// into the convolution's epilogue.
///
/// Only tensors with a single consumer that are not graph outputs disappear, so the
/// graph computes the same outputs; the tensors between fused nodes no longer exist,
/// which is why `inspect` and `split` plan the original graph.
enum GraphOptimizer {
    /// What the rewrite did.
    struct Report: Sendable, Equatable {
        var foldedBatchNorms = 0
        var fusedActivations = 0
    }

    static func optimize(_ model: Model) -> (Model, Report) {
        let graph = model.graph
        var consumers: [String: Int] = [:]
        for node in graph.nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: 0] += 1 } }
        let graphOutputs = Set(graph.outputs.map(\.name))
        var initializers = graph.initializers
        var nodes = graph.nodes
        var kernels = model.kernels
        var removed: Set<Int> = []
        var report = Report()

        /// The single node reading `tensor`, if the tensor may disappear.
        func soleConsumer(of tensor: String) -> Int? {
            guard consumers[tensor] == 1, !graphOutputs.contains(tensor) else { return nil }
            return nodes.indices.first { !removed.contains($0) && nodes[$0].inputs.contains(tensor) }
        }

        for index in nodes.indices {
            guard !removed.contains(index), var conv = kernels[index] as? ConvKernel, conv.epilogue == nil else { continue }
            let node = nodes[index]
            guard node.inputs.count >= 2, let weight = initializers[node.inputs[1]], weight.dtype == .float32 else { continue }
            let biasName = node.inputs.count > 2 ? node.inputs[2] : ""
            guard biasName.isEmpty || initializers[biasName] != nil else { continue }
            let channels = weight.shape[0]
            var weights = weight.scalars(as: Float.self)
            var bias = biasName.isEmpty ? [Float](repeating: 0, count: channels) : initializers[biasName]!.scalars(as: Float.self)
            var output = node.outputs[0]
            var changed = false

            if let next = soleConsumer(of: output), let batchNorm = kernels[next] as? BatchNormKernel, !batchNorm.training,
                nodes[next].inputs.count >= 5, nodes[next].inputs[0] == output,
                let parameters = Optional(nodes[next].inputs[1...4].compactMap({ initializers[$0]?.scalars(as: Float.self) })),
                parameters.count == 4, parameters.allSatisfy({ $0.count == channels })
            {
                let folded = Normalization.foldedBatchNorm(
                    scale: parameters[0], bias: parameters[1], mean: parameters[2], variance: parameters[3], epsilon: batchNorm.epsilon)
                let perChannel = weights.count / channels
                for m in 0..<channels {
                    for k in 0..<perChannel { weights[m * perChannel + k] *= folded.scale[m] }
                    bias[m] = bias[m] * folded.scale[m] + folded.shift[m]
                }
                output = nodes[next].outputs[0]
                removed.insert(next)
                report.foldedBatchNorms += 1
                changed = true
            }
            if let next = soleConsumer(of: output), nodes[next].inputs.first == output,
                let activation = fusable(kernels[next], nodes[next], initializers)
            {
                conv.epilogue = activation
                output = nodes[next].outputs[0]
                removed.insert(next)
                report.fusedActivations += 1
                changed = true
            }
            guard changed else { continue }
            let weightName = "\(node.inputs[1])::fused::\(index)"
            let biasFused = "\(weightName)::bias"
            initializers[weightName] = Tensor(shape: weight.shape, scalars: weights)
            initializers[biasFused] = Tensor(shape: [channels], scalars: bias)
            nodes[index] = Node(
                name: node.name, opType: node.opType, domain: node.domain, inputs: [node.inputs[0], weightName, biasFused], outputs: [output],
                attributes: node.attributes, sourceIndex: node.sourceIndex)
            kernels[index] = conv
        }
        let kept = nodes.indices.filter { !removed.contains($0) }
        let read = Set(kept.flatMap { nodes[$0].inputs })
        let rewritten = Graph(
            nodes: kept.map { nodes[$0] }, inputs: graph.inputs, outputs: graph.outputs, initializers: initializers.filter { read.contains($0.key) })
        return (Model(rewriting: model, graph: rewritten, kernels: kept.map { kernels[$0] }), report)
    }

    /// The activation a node computes, when it can run as a convolution epilogue.
    static func fusable(_ kernel: any OperatorKernel, _ node: Node, _ initializers: [String: Tensor]) -> Activation? {
        if let activation = kernel as? ActivationKernel { return activation.activation }
        guard let clip = kernel as? ClipKernel else { return nil }
        if let bounds = clip.attributeBounds { return .clip(min: bounds.0, max: bounds.1) }
        func bound(_ position: Int, _ fallback: Float) -> Float? {
            guard position < node.inputs.count, !node.inputs[position].isEmpty else { return fallback }
            guard let tensor = initializers[node.inputs[position]], tensor.count == 1, tensor.dtype == .float32 else { return nil }
            return tensor.scalars(as: Float.self)[0]
        }
        guard let low = bound(1, -.greatestFiniteMagnitude), let high = bound(2, .greatestFiniteMagnitude) else { return nil }
        return .clip(min: low, max: high)
    }
}
