import CleaveTensor

/// `Resize` (and opset-10 `Upsample`-style inputs) in nearest and linear modes.
struct ResizeKernel: OperatorKernel {
    let node: String
    let method: Resample.Method
    let coordinates: Resample.CoordinateMode
    /// Opset 10 has inputs (X, scales); later opsets (X, roi, scales, sizes).
    let scalesIndex: Int
    let sizesIndex: Int?
    var valueInputs: Set<Int> { Set([scalesIndex] + (sizesIndex.map { [$0] } ?? [])) }

    init(_ context: NodeContext) throws {
        node = context.name
        let mode = try context.string("mode", default: "nearest")
        switch mode {
        case "nearest":
            let rounding = try context.string("nearest_mode", default: "round_prefer_floor")
            guard let parsed = Resample.NearestRounding(rawValue: rounding) else {
                throw context.fail("nearest_mode '\(rounding)' is not supported")
            }
            method = .nearest(parsed)
        case "linear", "bilinear", "trilinear":
            method = .linear
        default:
            throw context.fail("mode '\(mode)' is not supported (nearest and linear are)")
        }
        let defaultMode = context.opset < 11 ? "asymmetric" : "half_pixel"
        let transform = try context.string("coordinate_transformation_mode", default: defaultMode)
        guard let parsed = Resample.CoordinateMode(rawValue: transform) else {
            throw context.fail("coordinate_transformation_mode '\(transform)' is not supported")
        }
        coordinates = parsed
        if try context.int("antialias", default: 0) != 0 { throw context.fail("antialias is not supported") }
        if try context.ints("axes") != nil { throw context.fail("the axes attribute is not supported") }
        scalesIndex = context.opset < 11 ? 1 : 2
        sizesIndex = context.opset < 11 ? nil : 3
    }

    /// Output shape and per-axis scale.
    func target(_ inputs: [InputInfo?]) throws -> ([Int], [Double]) {
        let shape = try inputs.required(0, node).type.shape
        if let sizesIndex, sizesIndex < inputs.count, let sizes = inputs[sizesIndex] {
            guard let values = try constantIntegers(sizes, node: node, op: "Resize", what: "sizes"), values.count == shape.count else {
                throw ONNXError.shapeMismatch(node, op: "Resize", "sizes must have \(shape.count) entries")
            }
            return (values, shape.indices.map { Double(values[$0]) / Double(max(shape[$0], 1)) })
        }
        guard scalesIndex < inputs.count, let scales = inputs[scalesIndex], let value = scales.value else {
            throw ONNXError.invalidNode(node, op: "Resize", "needs constant scales or sizes")
        }
        let factors = value.doubles()
        guard factors.count == shape.count, factors.allSatisfy({ $0 > 0 }),
            shape.indices.allSatisfy({ Double(shape[$0]) * factors[$0] <= Double(maximumAttributeExtent) })
        else {
            throw ONNXError.shapeMismatch(node, op: "Resize", "scales \(factors) must be \(shape.count) positive numbers that keep \(shape) holdable")
        }
        return (shape.indices.map { Int((Double(shape[$0]) * factors[$0]).rounded(.down)) }, factors)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let input = try inputs.required(0, node).type
        guard input.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "Resize", "input type \(input.dtype) is not supported (float32 is)")
        }
        return [TensorType(try target(inputs).0, .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let info = inputs.map { tensor in tensor.map { InputInfo(name: "", type: TensorType($0.shape, $0.dtype), value: $0) } }
        let (shape, scales) = try target(info)
        var current = inputs[0]!
        let changing = shape.indices.filter { shape[$0] != current.shape[$0] || scales[$0] != 1 }
        if changing.isEmpty {
            outputs[0].copyElements(from: current)
            return
        }
        for (position, axis) in changing.enumerated() {
            var nextShape = current.shape
            nextShape[axis] = shape[axis]
            let next = position == changing.count - 1 ? outputs[0] : Tensor(zeros: nextShape)
            Resample.resizeAxis(
                current, axis: axis, outputLength: shape[axis], scale: scales[axis], method: method,
                mode: coordinates, into: next)
            current = next
        }
    }
}
