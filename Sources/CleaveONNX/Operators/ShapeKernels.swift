import CleaveSupport
import CleaveTensor

/// Reads a constant integer input (shape, axes, pads) that shape inference needs.
func constantIntegers(_ input: InputInfo?, node: String, op: String, what: String) throws -> [Int]? {
    guard let input else { return nil }
    guard let value = input.value else {
        throw ONNXError.invalidNode(node, op: op, "\(what) input '\(input.name)' must be a constant or a graph input (it is computed at run time)")
    }
    return value.integers()
}

/// Copies the single input into the output, whose shape shape inference chose
/// (Flatten, Reshape, Squeeze, Unsqueeze).
protocol ReshapingKernel: OperatorKernel {
    func outputShape(_ inputs: [InputInfo?]) throws -> [Int]
    var node: String { get }
}

extension ReshapingKernel {
    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node)
        return [TensorType(try outputShape(inputs), input.type.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        outputs[0].copyElements(from: inputs[0]!)
    }
}

struct FlattenKernel: ReshapingKernel {
    let node: String
    let axis: Int

    func outputShape(_ inputs: [InputInfo?]) throws -> [Int] {
        let shape = try inputs.required(0, node).type.shape
        let resolved = axis < 0 ? axis + shape.count : axis
        guard resolved >= 0 && resolved <= shape.count else {
            throw ONNXError.shapeMismatch(node, op: "Flatten", "axis \(axis) is out of range for \(shape)")
        }
        return [shape[..<resolved].reduce(1, *), shape[resolved...].reduce(1, *)]
    }
}

struct ReshapeKernel: ReshapingKernel {
    let node: String
    let allowZero: Bool
    let attributeShape: [Int]?
    var valueInputs: Set<Int> { [1] }

    func outputShape(_ inputs: [InputInfo?]) throws -> [Int] {
        let input = try inputs.required(0, node).type.shape
        let requested: [Int]
        if let attributeShape {
            requested = attributeShape
        } else {
            guard let values = try constantIntegers(inputs.count > 1 ? inputs[1] : nil, node: node, op: "Reshape", what: "shape") else {
                throw ONNXError.missingInput("\(node): Reshape needs a shape input")
            }
            requested = values
        }
        var shape = requested.enumerated().map { index, value in
            value == 0 && !allowZero && index < input.count ? input[index] : value
        }
        let total = input.reduce(1, *)
        let inferred = shape.indices.filter { shape[$0] == -1 }
        // The requested shape is untrusted: its product may overflow.
        guard inferred.count <= 1, shape.allSatisfy({ $0 >= -1 }), shape.filter({ $0 != -1 }).checkedProduct() != nil else {
            throw ONNXError.shapeMismatch(node, op: "Reshape", "requested shape \(requested) is invalid")
        }
        if let position = inferred.first {
            let known = shape.enumerated().filter { $0.offset != position }.map(\.element).reduce(1, *)
            guard known > 0, total % known == 0 else {
                throw ONNXError.shapeMismatch(node, op: "Reshape", "cannot reshape \(input) to \(requested)")
            }
            shape[position] = total / known
        }
        guard shape.reduce(1, *) == total else {
            throw ONNXError.shapeMismatch(node, op: "Reshape", "cannot reshape \(input) (\(total) elements) to \(requested)")
        }
        return shape
    }
}

struct SqueezeKernel: ReshapingKernel {
    let node: String
    let attributeAxes: [Int]?
    var valueInputs: Set<Int> { [1] }

    func outputShape(_ inputs: [InputInfo?]) throws -> [Int] {
        let shape = try inputs.required(0, node).type.shape
        let axes = try attributeAxes ?? constantIntegers(inputs.count > 1 ? inputs[1] : nil, node: node, op: "Squeeze", what: "axes")
        guard let axes else { return shape.filter { $0 != 1 } }
        let resolved = try Set(axes.map { try resolveAxis($0, rank: shape.count, node) })
        for axis in resolved where shape[axis] != 1 {
            throw ONNXError.shapeMismatch(node, op: "Squeeze", "axis \(axis) of \(shape) is not 1")
        }
        return shape.enumerated().filter { !resolved.contains($0.offset) }.map(\.element)
    }
}

struct UnsqueezeKernel: ReshapingKernel {
    let node: String
    let attributeAxes: [Int]?
    var valueInputs: Set<Int> { [1] }

    func outputShape(_ inputs: [InputInfo?]) throws -> [Int] {
        let shape = try inputs.required(0, node).type.shape
        guard let axes = try attributeAxes ?? constantIntegers(inputs.count > 1 ? inputs[1] : nil, node: node, op: "Unsqueeze", what: "axes") else {
            throw ONNXError.missingInput("\(node): Unsqueeze needs axes")
        }
        let rank = shape.count + axes.count
        let resolved = try Set(axes.map { try resolveAxis($0, rank: rank, node) })
        guard resolved.count == axes.count else {
            throw ONNXError.shapeMismatch(node, op: "Unsqueeze", "axes \(axes) repeat")
        }
        var remaining = shape.makeIterator()
        return (0..<rank).map { resolved.contains($0) ? 1 : remaining.next()! }
    }
}

// MARK: - Transpose and Concat

struct TransposeKernel: OperatorKernel {
    let node: String
    let permutation: [Int]?

    func resolved(_ rank: Int) throws -> [Int] {
        let permutation = self.permutation ?? Array((0..<rank).reversed())
        guard permutation.count == rank, Set(permutation) == Set(0..<rank) else {
            throw ONNXError.shapeMismatch(node, op: "Transpose", "perm \(permutation) is not a permutation of \(rank) axes")
        }
        return permutation
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node).type
        return [TensorType(try resolved(input.shape.count).map { input.shape[$0] }, input.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        Layout.transpose(inputs[0]!, permutation: try resolved(inputs[0]!.rank), into: outputs[0])
    }
}

struct ConcatKernel: OperatorKernel {
    let node: String
    let axis: Int

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let parts = inputs.compactMap { $0 }
        guard let first = parts.first else { throw ONNXError.missingInput("\(node): Concat needs inputs") }
        let axis = try resolveAxis(self.axis, rank: first.type.shape.count, node)
        var shape = first.type.shape
        shape[axis] = 0
        for part in parts {
            var other = part.type.shape
            guard other.count == shape.count, part.type.dtype == first.type.dtype else {
                throw ONNXError.shapeMismatch(node, op: "Concat", "\(part.name) is \(part.type), first input is \(first.type)")
            }
            shape[axis] += other[axis]
            other[axis] = shape[axis]
            guard other == shape else {
                throw ONNXError.shapeMismatch(node, op: "Concat", "\(part.name) \(part.type.shape) differs from \(first.type.shape) off axis \(axis)")
            }
        }
        return [TensorType(shape, first.type.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let parts = inputs.compactMap { $0 }
        Layout.concat(parts, axis: try resolveAxis(axis, rank: parts[0].rank, node), into: outputs[0])
    }
}

// MARK: - Shape, Gather, Constant

struct ShapeKernel: OperatorKernel {
    let node: String
    let start: Int
    let end: Int?

    func range(_ rank: Int) -> Range<Int> {
        func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + rank : value, 0), rank) }
        let lower = clamp(start)
        let upper = clamp(end ?? rank)
        return lower..<max(lower, upper)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node).type
        return [TensorType([range(input.shape.count).count], .int64)]
    }

    /// The output for an input of `shape`; the planner calls this, since only the shape matters.
    func value(for shape: [Int]) -> Tensor {
        let dimensions = shape[range(shape.count)].map { Int64($0) }
        return Tensor(shape: [dimensions.count], scalars: dimensions)
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        outputs[0].copyElements(from: value(for: inputs[0]!.shape))
    }
}

struct GatherKernel: OperatorKernel {
    let node: String
    let axis: Int

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let data = try inputs.required(0, node).type
        let indices = try inputs.required(1, node).type
        guard indices.dtype == .int64 || indices.dtype == .int32 else {
            throw ONNXError.invalidNode(node, op: "Gather", "indices must be int32 or int64, are \(indices.dtype)")
        }
        let axis = try resolveAxis(self.axis, rank: data.shape.count, node)
        return [TensorType(Array(data.shape[..<axis]) + indices.shape + Array(data.shape[(axis + 1)...]), data.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let data = inputs[0]!
        do {
            try Layout.gather(data, indices: inputs[1]!.integers(), axis: try resolveAxis(axis, rank: data.rank, node), into: outputs[0])
        } catch let error as TensorError {
            throw ONNXError.invalidNode(node, op: "Gather", error.description)
        }
    }
}

struct ConstantKernel: OperatorKernel {
    let node: String
    let value: Tensor

    init(_ context: NodeContext) throws {
        node = context.name
        let candidates = context.node.attributes.filter { $0.key.hasPrefix("value") || $0.key == "sparse_value" }
        guard candidates.count == 1, let (key, attribute) = candidates.first else {
            throw context.fail("needs exactly one value attribute, has \(candidates.keys.sorted())")
        }
        switch (key, attribute) {
        case ("value", .tensor(let tensor)): value = tensor
        case ("value_float", .float(let number)): value = Tensor(shape: [], scalars: [number])
        case ("value_floats", .floats(let numbers)): value = Tensor(shape: [numbers.count], scalars: numbers)
        case ("value_int", .int(let number)): value = Tensor(shape: [], scalars: [Int64(number)])
        case ("value_ints", .ints(let numbers)): value = Tensor(shape: [numbers.count], scalars: numbers.map { Int64($0) })
        default: throw context.fail("attribute '\(key)' is not supported")
        }
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] { [TensorType(value.shape, value.dtype)] }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        outputs[0].copyElements(from: value)
    }
}

// MARK: - Pad

struct PadKernel: OperatorKernel {
    let node: String
    let mode: Layout.PadMode
    let attributePads: [Int]?
    let attributeValue: Float
    var valueInputs: Set<Int> { [1, 3] }

    func amounts(_ inputs: [InputInfo?], rank: Int) throws -> (begin: [Int], end: [Int]) {
        let pads = try attributePads ?? constantIntegers(inputs.count > 1 ? inputs[1] : nil, node: node, op: "Pad", what: "pads")
        guard let pads else { throw ONNXError.missingInput("\(node): Pad needs pads") }
        let axes =
            try constantIntegers(inputs.count > 3 ? inputs[3] : nil, node: node, op: "Pad", what: "axes")
            ?? Array(0..<rank)
        guard pads.count == 2 * axes.count else {
            throw ONNXError.shapeMismatch(node, op: "Pad", "pads \(pads) need \(2 * axes.count) entries")
        }
        var begin = [Int](repeating: 0, count: rank)
        var end = [Int](repeating: 0, count: rank)
        for (position, axis) in axes.enumerated() {
            let resolved = try resolveAxis(axis, rank: rank, node)
            begin[resolved] = pads[position]
            end[resolved] = pads[position + axes.count]
        }
        return (begin, end)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node).type
        let (begin, end) = try amounts(inputs, rank: input.shape.count)
        guard (begin + end).allSatisfy({ (-maximumAttributeExtent...maximumAttributeExtent).contains($0) }) else {
            throw ONNXError.shapeMismatch(node, op: "Pad", "pads \(begin + end) exceed \(maximumAttributeExtent)")
        }
        let shape = input.shape.indices.map { input.shape[$0] + begin[$0] + end[$0] }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw ONNXError.shapeMismatch(node, op: "Pad", "pads crop \(input.shape) below zero")
        }
        if mode != .constant {
            for axis in input.shape.indices where input.shape[axis] == 0 && (begin[axis] > 0 || end[axis] > 0) {
                throw ONNXError.shapeMismatch(node, op: "Pad", "cannot \(mode)-pad an empty axis \(axis)")
            }
        }
        return [TensorType(shape, input.dtype)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let input = inputs[0]!
        let info = inputs.map { tensor in tensor.map { InputInfo(name: "", type: TensorType($0.shape, $0.dtype), value: $0) } }
        let (begin, _) = try amounts(info, rank: input.rank)
        var fill = Tensor(zeros: [], dtype: input.dtype)
        if inputs.count > 2, let value = inputs[2], value.count == 1 {
            fill = value
        } else if input.dtype == .float32 {
            fill = Tensor(shape: [], scalars: [attributeValue])
        }
        Layout.pad(input, begin: begin, mode: mode, constant: fill.bytes(), into: outputs[0])
    }
}
