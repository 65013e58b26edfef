import CleaveTensor

/// The ONNX window attributes shared by Conv, ConvTranspose and the pools.
struct WindowAttributes: Sendable {
    let kernel: [Int]?
    let strides: [Int]?
    let dilations: [Int]?
    let pads: [Int]?
    let autoPad: String
    let group: Int

    init(_ context: NodeContext) throws {
        kernel = try context.ints("kernel_shape")
        strides = try context.ints("strides")
        dilations = try context.ints("dilations")
        pads = try context.ints("pads")
        autoPad = try context.string("auto_pad", default: "NOTSET")
        group = try context.int("group", default: 1)
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else {
            throw context.fail("auto_pad '\(autoPad)' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        }
        guard group >= 1 else { throw context.fail("group must be at least 1, is \(group)") }
    }

    private init(kernel: [Int]?, strides: [Int]?, dilations: [Int]?, pads: [Int]?, autoPad: String, group: Int) {
        (self.kernel, self.strides, self.dilations, self.pads, self.autoPad, self.group) = (kernel, strides, dilations, pads, autoPad, group)
    }

    /// The same window with explicit `pads` (all begins, then all ends) in place of the
    /// node's pads or `auto_pad`.
    func withPads(_ pads: [Int]) -> WindowAttributes {
        WindowAttributes(kernel: kernel, strides: strides, dilations: dilations, pads: pads, autoPad: "NOTSET", group: group)
    }

    /// Resolves strides, dilations and pads for `spatial` input sizes and window `kernel`,
    /// returning the geometry and the output sizes. `ceilMode` applies to pooling.
    func resolve(spatial: [Int], kernel: [Int], ceilMode: Bool = false, node: String, op: String) throws
        -> (WindowGeometry, [Int])
    {
        let rank = spatial.count
        let strides = self.strides ?? [Int](repeating: 1, count: rank)
        let dilations = self.dilations ?? [Int](repeating: 1, count: rank)
        var begin = [Int](repeating: 0, count: rank)
        var end = [Int](repeating: 0, count: rank)
        guard kernel.count == rank, strides.count == rank, dilations.count == rank else {
            throw ONNXError.shapeMismatch(
                node, op: op, "kernel \(kernel), strides \(strides) or dilations \(dilations) do not match \(rank) spatial dimensions")
        }
        guard strides.allSatisfy({ $0 > 0 }), dilations.allSatisfy({ $0 > 0 }), kernel.allSatisfy({ $0 > 0 }) else {
            throw ONNXError.invalidNode(node, op: op, "kernel, strides and dilations must be positive")
        }
        // Attributes are untrusted: bounded, the geometry's sums and products cannot overflow.
        guard (kernel + strides + dilations + (pads ?? [])).allSatisfy({ $0 <= maximumAttributeExtent }) else {
            throw ONNXError.invalidNode(node, op: op, "kernel, strides, dilations or pads above \(maximumAttributeExtent)")
        }
        if autoPad == "NOTSET", let pads {
            guard pads.count == 2 * rank, pads.allSatisfy({ $0 >= 0 }) else {
                throw ONNXError.shapeMismatch(node, op: op, "pads \(pads) must have \(2 * rank) non-negative entries")
            }
            begin = Array(pads[..<rank])
            end = Array(pads[rank...])
        }
        var output = [Int](repeating: 0, count: rank)
        for axis in 0..<rank {
            let extent = (kernel[axis] - 1) * dilations[axis] + 1
            switch autoPad {
            case "SAME_UPPER", "SAME_LOWER":
                output[axis] = (spatial[axis] + strides[axis] - 1) / strides[axis]
                let total = max(0, (output[axis] - 1) * strides[axis] + extent - spatial[axis])
                begin[axis] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                end[axis] = total - begin[axis]
            default:
                let span = spatial[axis] + begin[axis] + end[axis] - extent
                guard span >= 0 else {
                    throw ONNXError.shapeMismatch(
                        node, op: op,
                        "window \(extent) is larger than padded input \(spatial[axis] + begin[axis] + end[axis]) on spatial axis \(axis)")
                }
                if ceilMode {
                    output[axis] = (span + strides[axis] - 1) / strides[axis] + 1
                    if (output[axis] - 1) * strides[axis] >= spatial[axis] + begin[axis] { output[axis] -= 1 }
                } else {
                    output[axis] = span / strides[axis] + 1
                }
            }
        }
        let geometry = WindowGeometry(kernel: kernel, strides: strides, dilations: dilations, padsBegin: begin, padsEnd: end, group: group)
        return (geometry, output)
    }
}

// MARK: - Conv

/// A kernel that slides a window over the spatial axes: patch-based execution walks its
/// receptive field backwards and runs it on a patch with the patch's own padding.
protocol SlidingWindowKernel: OperatorKernel {
    /// The window's resolved geometry for these input types (input 0, and the weight for a
    /// convolution).
    func geometry(_ inputs: [TensorType?]) throws -> WindowGeometry
    /// A copy that pads by `pads` (begins, then ends, per spatial axis) whatever the node's
    /// pads, `auto_pad` or ceil mode said.
    func withPads(_ pads: [Int]) -> Self
}

struct ConvKernel: SlidingWindowKernel {
    let node: String
    var window: WindowAttributes
    /// An activation fused into the convolution by ``GraphOptimizer``, applied to its output.
    var epilogue: Activation? = nil
    /// Set by ``GraphOptimizer`` when the Add that followed the convolution is fused into it:
    /// input 3 (the Add's other operand) is added to the output before `epilogue`.
    var addsResidual = false
    /// Set by ``GraphOptimizer`` when it replaced the `[M, C, 3, 3]` weight by its Winograd
    /// transform `[16, M, C]` (``Convolution/winogradFilters(_:pool:)``).
    var winogradWeights = false
    /// Set in a plan's copy of the kernel (``specialized(for:)``): the geometry and output
    /// spatial sizes for the plan's input and weight shapes.
    var planned: (input: [Int], weight: [Int], geometry: WindowGeometry, spatial: [Int])?

    func specialized(for inputs: [InputInfo?]) throws -> any OperatorKernel {
        guard let x = inputs.first??.type.shape, inputs.count > 1, let w = inputs[1]?.type.shape else { return self }
        var copy = self
        let (geometry, spatial) = try plan(x, w)
        copy.planned = (x, w, geometry.promoted, spatial)
        return copy
    }

    func geometry(_ inputs: [TensorType?]) throws -> WindowGeometry {
        guard let x = inputs.first??.shape, inputs.count > 1, let w = inputs[1]?.shape else {
            throw ONNXError.missingInput("\(node): Conv needs its input and weight")
        }
        return try plan(x, w).0
    }

    /// A depthwise convolution that keeps the plane size writes over its input (see
    /// ``Convolution/depthwiseRunsInPlace(input:output:weight:group:)``).
    func overwritesInput(_ inputs: [InputInfo?], output: TensorType) -> Bool {
        guard !addsResidual, !winogradWeights, let x = inputs.first??.type.shape, inputs.count > 1, let w = inputs[1]?.type.shape else {
            return false
        }
        return Convolution.depthwiseRunsInPlace(input: x, output: output.shape, weight: w, group: window.group)
    }

    func withPads(_ pads: [Int]) -> ConvKernel {
        var copy = self
        copy.window = window.withPads(pads)
        copy.planned = nil
        return copy
    }

    /// The weight's shape as the graph declared it.
    func declaredWeightShape(_ w: [Int]) -> [Int] { winogradWeights && w.count == 3 ? [w[1], w[2], 3, 3] : w }

    func plan(_ x: [Int], _ transformedW: [Int]) throws -> (WindowGeometry, [Int]) {
        let w = declaredWeightShape(transformedW)
        guard x.count >= 3, x.count <= 5, w.count == x.count else {
            throw ONNXError.shapeMismatch(node, op: "Conv", "input \(x) and weight \(w) must both be 3-d to 5-d (N, C, spatial…)")
        }
        guard x[1] == w[1] * window.group, w[0] % window.group == 0 else {
            throw ONNXError.shapeMismatch(
                node, op: "Conv", "input has \(x[1]) channels, weight \(w) with group \(window.group) expects \(w[1] * window.group)")
        }
        let kernel = Array(w[2...])
        if let declared = window.kernel, declared != kernel {
            throw ONNXError.shapeMismatch(node, op: "Conv", "kernel_shape \(declared) differs from weight \(w)")
        }
        return try window.resolve(spatial: Array(x[2...]), kernel: kernel, node: node, op: "Conv")
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        let w = try inputs.required(1, node).type
        guard x.dtype == .float32, w.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "Conv", "only float32 is supported, got \(x.dtype) and \(w.dtype)")
        }
        let outChannels = declaredWeightShape(w.shape)[0]
        if inputs.count > 2, let bias = inputs[2], bias.type.shape != [outChannels] {
            throw ONNXError.shapeMismatch(node, op: "Conv", "bias \(bias.type.shape) should be [\(outChannels)]")
        }
        let (_, output) = try plan(x.shape, w.shape)
        let convolved = [x.shape[0], outChannels] + output
        guard addsResidual else { return [TensorType(convolved, .float32)] }
        let residual = try inputs.required(3, node).type
        guard residual.dtype == .float32, let sum = Broadcast.shape([convolved, residual.shape]) else {
            throw ONNXError.shapeMismatch(node, op: "Conv", "the fused Add's operand \(residual) does not broadcast with \(convolved)")
        }
        return [TensorType(sum, .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let (geometry, spatial) =
            if let planned, planned.input == inputs[0]!.shape, planned.weight == inputs[1]!.shape {
                (planned.geometry, planned.spatial)
            } else {
                try plan(inputs[0]!.shape, inputs[1]!.shape)
            }
        let bias = inputs.count > 2 ? inputs[2] : nil
        func convolve(into output: Tensor, residual: Tensor? = nil, activation: Activation? = nil) {
            if winogradWeights {
                Convolution.forwardWinograd(
                    input: inputs[0]!, transformedWeight: inputs[1]!, bias: bias, geometry: geometry, into: output, residual: residual,
                    activation: activation, pool: context.pool, scratch: context.scratch)
            } else {
                Convolution.forward(
                    input: inputs[0]!, weight: inputs[1]!, bias: bias, geometry: geometry, into: output, residual: residual,
                    activation: activation, pool: context.pool, scratch: context.scratch)
            }
        }
        guard addsResidual, let residual = inputs[3] else {
            convolve(into: outputs[0], activation: epilogue)
            return
        }
        let convolvedShape = [inputs[0]!.shape[0], declaredWeightShape(inputs[1]!.shape)[0]] + spatial
        if residual.shape == convolvedShape {
            // The common case (ResNet, MobileNetV2): the shortcut is added and activated as the output is made.
            convolve(into: outputs[0], residual: residual, activation: epilogue)
            return
        }
        // A broadcast Add, as the graph had it: the convolution into its own tensor when the
        // sum is larger than it, then the general Add.
        let convolved = outputs[0].shape == convolvedShape ? outputs[0] : Tensor(zeros: convolvedShape, dtype: .float32)
        convolve(into: convolved)
        BinaryOperator.add.apply(convolved, residual, into: outputs[0], pool: context.pool)
        epilogue?.apply(outputs[0], into: outputs[0], pool: context.pool)
    }
}

// MARK: - ConvTranspose

struct ConvTransposeKernel: OperatorKernel {
    let node: String
    let window: WindowAttributes
    let outputPadding: [Int]?
    let outputShape: [Int]?

    func plan(_ x: [Int], _ w: [Int]) throws -> (WindowGeometry, [Int]) {
        guard x.count >= 3, x.count <= 5, w.count == x.count else {
            throw ONNXError.shapeMismatch(node, op: "ConvTranspose", "input \(x) and weight \(w) must both be 3-d to 5-d")
        }
        guard x[1] == w[0], x[1] % window.group == 0 else {
            throw ONNXError.shapeMismatch(node, op: "ConvTranspose", "input has \(x[1]) channels, weight \(w) expects \(w[0])")
        }
        let rank = x.count - 2
        let kernel = window.kernel ?? Array(w[2...])
        let strides = window.strides ?? [Int](repeating: 1, count: rank)
        let dilations = window.dilations ?? [Int](repeating: 1, count: rank)
        let extra = outputPadding ?? [Int](repeating: 0, count: rank)
        guard kernel.count == rank, strides.count == rank, dilations.count == rank, extra.count == rank else {
            throw ONNXError.shapeMismatch(node, op: "ConvTranspose", "attributes do not match \(rank) spatial dimensions")
        }
        var begin = [Int](repeating: 0, count: rank)
        var end = [Int](repeating: 0, count: rank)
        if let pads = window.pads, window.autoPad == "NOTSET" {
            guard pads.count == 2 * rank else {
                throw ONNXError.shapeMismatch(node, op: "ConvTranspose", "pads \(pads) must have \(2 * rank) entries")
            }
            begin = Array(pads[..<rank])
            end = Array(pads[rank...])
        }
        var output = [Int](repeating: 0, count: rank)
        for axis in 0..<rank {
            let full = strides[axis] * (x[axis + 2] - 1) + extra[axis] + (kernel[axis] - 1) * dilations[axis] + 1
            if let outputShape {
                let target = outputShape[outputShape.count - rank + axis]
                let total = full - target
                if total < 0 {
                    // The requested output is larger than the taps reach: the rest stays at the bias.
                    begin[axis] = 0
                    end[axis] = total
                } else if window.autoPad == "SAME_UPPER" {
                    begin[axis] = total / 2
                    end[axis] = total - total / 2
                } else {
                    begin[axis] = total - total / 2
                    end[axis] = total / 2
                }
                output[axis] = target
            } else if window.autoPad == "SAME_UPPER" || window.autoPad == "SAME_LOWER" {
                output[axis] = x[axis + 2] * strides[axis]
                let total = max(0, full - output[axis])
                begin[axis] = window.autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                end[axis] = total - begin[axis]
            } else {
                output[axis] = full - begin[axis] - end[axis]
            }
            guard output[axis] > 0 else {
                throw ONNXError.shapeMismatch(node, op: "ConvTranspose", "output size on spatial axis \(axis) would be \(output[axis])")
            }
        }
        let geometry = WindowGeometry(kernel: kernel, strides: strides, dilations: dilations, padsBegin: begin, padsEnd: end, group: window.group)
        return (geometry, output)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        let w = try inputs.required(1, node).type
        guard x.dtype == .float32, w.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "ConvTranspose", "only float32 is supported")
        }
        let (_, output) = try plan(x.shape, w.shape)
        return [TensorType([x.shape[0], w.shape[1] * window.group] + output, .float32)]
    }

    /// The plan's geometry for its input and weight shapes (``specialized(for:)``).
    var planned: (input: [Int], weight: [Int], geometry: WindowGeometry)?

    func specialized(for inputs: [InputInfo?]) throws -> any OperatorKernel {
        guard let x = inputs.first??.type.shape, inputs.count > 1, let w = inputs[1]?.type.shape else { return self }
        var copy = self
        copy.planned = (x, w, try plan(x, w).0.promoted)
        return copy
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let geometry =
            if let planned, planned.input == inputs[0]!.shape, planned.weight == inputs[1]!.shape {
                planned.geometry
            } else {
                try plan(inputs[0]!.shape, inputs[1]!.shape).0
            }
        ConvolutionTranspose.forward(
            input: inputs[0]!, weight: inputs[1]!, bias: inputs.count > 2 ? inputs[2] : nil,
            geometry: geometry, into: outputs[0], pool: context.pool, scratch: context.scratch)
    }
}

// MARK: - Pooling

struct PoolKernel: SlidingWindowKernel {
    let node: String
    let op: String
    var window: WindowAttributes
    let kind: Pooling.Kind
    var ceilMode: Bool

    func geometry(_ inputs: [TensorType?]) throws -> WindowGeometry {
        guard let x = inputs.first??.shape else { throw ONNXError.missingInput("\(node): \(op) needs its input") }
        return try plan(x).0
    }

    func withPads(_ pads: [Int]) -> PoolKernel {
        var copy = self
        copy.window = window.withPads(pads)
        copy.ceilMode = false
        copy.planned = nil
        return copy
    }

    func plan(_ x: [Int]) throws -> (WindowGeometry, [Int]) {
        guard x.count >= 3, x.count <= 5 else {
            throw ONNXError.shapeMismatch(node, op: op, "input \(x) must be 3-d to 5-d (N, C, spatial…)")
        }
        guard let kernel = window.kernel else { throw ONNXError.invalidNode(node, op: op, "kernel_shape is required") }
        return try window.resolve(spatial: Array(x[2...]), kernel: kernel, ceilMode: ceilMode, node: node, op: op)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        let allowed: [DType] = kind == .max ? [.float32, .uint8, .int8] : [.float32]
        guard allowed.contains(x.dtype) else {
            throw ONNXError.invalidNode(node, op: op, "input type \(x.dtype) is not supported")
        }
        let (_, output) = try plan(x.shape)
        return [TensorType(Array(x.shape[..<2]) + output, x.dtype)]
    }

    /// The plan's geometry for its input shape (``specialized(for:)``).
    var planned: (input: [Int], geometry: WindowGeometry)?

    func specialized(for inputs: [InputInfo?]) throws -> any OperatorKernel {
        guard let x = inputs.first??.type.shape else { return self }
        var copy = self
        copy.planned = (x, try plan(x).0)
        return copy
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let geometry = if let planned, planned.input == inputs[0]!.shape { planned.geometry } else { try plan(inputs[0]!.shape).0 }
        Pooling.forward(input: inputs[0]!, kind: kind, geometry: geometry, into: outputs[0], pool: context.pool)
    }
}

struct GlobalAveragePoolKernel: OperatorKernel {
    let node: String

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        guard x.shape.count >= 3, x.dtype == .float32 else {
            throw ONNXError.shapeMismatch(node, op: "GlobalAveragePool", "input must be float32 N, C, spatial…; got \(x)")
        }
        return [TensorType(Array(x.shape[..<2]) + [Int](repeating: 1, count: x.shape.count - 2), .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        Pooling.globalAverage(input: inputs[0]!, into: outputs[0], pool: context.pool)
    }
}
