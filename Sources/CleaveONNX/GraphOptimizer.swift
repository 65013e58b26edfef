import CleaveTensor

/// Rewrites a graph for execution: folds inference-mode BatchNormalization into the
/// preceding convolution's weights and bias, and fuses what follows into the
/// convolution's epilogue: an activation (Relu, LeakyRelu, Clip with constant bounds,
/// Sigmoid, Tanh, HardSigmoid, HardSwish), or a float Add (a residual shortcut) and the
/// activation after it.
///
/// A convolution fused with an Add takes the Add's place in the node order, because the
/// Add's other operand (the shortcut) may be computed after the convolution.
///
/// Only tensors with a single consumer that are not graph outputs disappear, so the
/// graph computes the same outputs; the tensors between fused nodes no longer exist,
/// which is why `inspect` and `split` plan the original graph.
enum GraphOptimizer {
    /// What the rewrite did.
    struct Report: Sendable, Equatable {
        var foldedBatchNorms = 0
        var fusedActivations = 0
        var fusedResiduals = 0
        var winogradFilters = 0
    }

    /// Whether a convolution runs by Winograd F(2×2, 3×3) on filters transformed here, once:
    /// 2-D, 3×3, stride and dilation 1, one group, at least 16 channels in and out (fewer
    /// make the transforms cost more than they save).
    static func winogradQualifies(_ conv: ConvKernel, _ weight: [Int]) -> Bool {
        let window = conv.window
        return weight.count == 4 && weight[2] == 3 && weight[3] == 3 && weight[0] >= 16 && weight[1] >= 16 && window.group == 1
            && (window.strides ?? [1, 1]) == [1, 1] && (window.dilations ?? [1, 1]) == [1, 1]
            && (window.kernel ?? [3, 3]) == [3, 3]
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
            guard !removed.contains(index), var conv = kernels[index] as? ConvKernel, conv.epilogue == nil, !conv.addsResidual else {
                continue
            }
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
            // The fused node's place in the order, and the Add's other operand if an Add is fused.
            var position = index
            var residual: String?
            if let next = soleConsumer(of: output), let add = kernels[next] as? BinaryKernel, add.operation == .add,
                nodes[next].inputs.count == 2, nodes[next].inputs.filter({ $0 == output }).count == 1
            {
                let other = nodes[next].inputs[0] == output ? nodes[next].inputs[1] : nodes[next].inputs[0]
                if initializers[other].map({ $0.dtype == .float32 }) ?? true {
                    residual = other
                    conv.addsResidual = true
                    output = nodes[next].outputs[0]
                    removed.insert(next)
                    position = next
                    report.fusedResiduals += 1
                    changed = true
                }
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
            if winogradQualifies(conv, weight.shape) {
                conv.winogradWeights = true
                report.winogradFilters += 1
                changed = true
            }
            guard changed else { continue }
            let weightName = "\(node.inputs[1])::fused::\(index)"
            let biasFused = "\(weightName)::bias"
            let finalWeight = Tensor(shape: weight.shape, scalars: weights)
            initializers[weightName] = conv.winogradWeights ? Convolution.winogradFilters(finalWeight) : finalWeight
            initializers[biasFused] = Tensor(shape: [channels], scalars: bias)
            if position != index {
                removed.insert(index)
                removed.remove(position)
            }
            nodes[position] = Node(
                name: node.name, opType: node.opType, domain: node.domain,
                inputs: [node.inputs[0], weightName, biasFused] + (residual.map { [$0] } ?? []), outputs: [output],
                attributes: node.attributes, sourceIndex: node.sourceIndex)
            kernels[position] = conv
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
