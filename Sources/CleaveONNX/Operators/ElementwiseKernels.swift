import CleaveTensor

// MARK: - Arithmetic with broadcasting (Add, Sub, Mul, Div)

struct BinaryKernel: OperatorKernel {
    let node: String
    let operation: BinaryOperator

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let lhs = try inputs.required(0, node)
        let rhs = try inputs.required(1, node)
        guard lhs.type.dtype == rhs.type.dtype else {
            throw ONNXError.shapeMismatch(node, op: operation.rawValue, "input types differ: \(lhs.type.dtype) and \(rhs.type.dtype)")
        }
        guard lhs.type.dtype != .bool else {
            throw ONNXError.invalidNode(node, op: operation.rawValue, "arithmetic on bool tensors is not supported")
        }
        guard let shape = Broadcast.shape([lhs.type.shape, rhs.type.shape]) else {
            throw ONNXError.shapeMismatch(node, op: operation.rawValue, "\(lhs.type.shape) and \(rhs.type.shape) do not broadcast")
        }
        return [TensorType(shape, lhs.type.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        operation.apply(inputs[0]!, inputs[1]!, into: outputs[0], pool: context.pool)
    }
}

// MARK: - Activations

struct ActivationKernel: OperatorKernel {
    let node: String
    let activation: Activation

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node)
        guard input.type.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "\(activation)", "input type \(input.type.dtype) is not supported (float32 is)")
        }
        return [input.type]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        activation.apply(inputs[0]!, into: outputs[0], pool: context.pool)
    }
}

/// `Clip`: bounds come from attributes before opset 11 and from optional inputs after.
struct ClipKernel: OperatorKernel {
    let node: String
    let attributeBounds: (Float, Float)?

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node)
        for index in [1, 2] where index < inputs.count {
            if let bound = inputs[index], bound.type.shape.reduce(1, *) != 1 {
                throw ONNXError.shapeMismatch(node, op: "Clip", "bound \(bound.name) must be a scalar, has shape \(bound.type.shape)")
            }
        }
        return [input.type]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let input = inputs[0]!
        var low = -Double.infinity
        var high = Double.infinity
        if let attributeBounds {
            (low, high) = (Double(attributeBounds.0), Double(attributeBounds.1))
        } else {
            if inputs.count > 1, let bound = inputs[1] { low = bound.doubles()[0] }
            if inputs.count > 2, let bound = inputs[2] { high = bound.doubles()[0] }
        }
        if input.dtype == .float32 {
            Activation.clip(min: Float(low), max: Float(high)).apply(input, into: outputs[0], pool: context.pool)
        } else {
            Clamp.apply(input, low: low, high: high, into: outputs[0])
        }
    }
}

// MARK: - Identity and Dropout (inference)

struct IdentityKernel: OperatorKernel {
    let node: String
    /// Whether the node may have a second (mask) output, as `Dropout` does.
    let hasMask: Bool
    var valueInputs: Set<Int> { hasMask ? [2] : [] }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node)
        if hasMask, inputs.count > 2, let training = inputs[2], let value = training.value, value.doubles().first != 0 {
            throw ONNXError.invalidNode(node, op: "Dropout", "training_mode=true is not supported for inference")
        }
        return hasMask ? [input.type, TensorType(input.type.shape, .bool)] : [input.type]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        outputs[0].copyElements(from: inputs[0]!)
        if outputs.count > 1 {
            let mask = outputs[1].buffer(as: UInt8.self)
            mask.update(repeating: 1)
        }
    }
}

// MARK: - Softmax and LogSoftmax

struct SoftmaxKernel: OperatorKernel {
    let node: String
    let axis: Int
    let logarithm: Bool
    /// Before opset 13 the input is flattened to 2-d at `axis`.
    let flattens: Bool

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node)
        guard input.type.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "Softmax", "input type \(input.type.dtype) is not supported (float32 is)")
        }
        _ = try resolveAxis(axis, rank: input.type.shape.count, node)
        return [input.type]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let input = inputs[0]!
        let axis = try resolveAxis(self.axis, rank: input.rank, node)
        let outer = input.shape[..<axis].reduce(1, *)
        let length = flattens ? input.shape[axis...].reduce(1, *) : (input.rank == 0 ? 1 : input.shape[axis])
        let inner = flattens ? 1 : input.shape[(axis + 1)...].reduce(1, *)
        Normalization.softmax(
            input: input, outer: outer, length: length, inner: inner, logarithm: logarithm,
            into: outputs[0], pool: context.pool)
    }
}
