import CleaveTensor

/// `QuantizeLinear` and `DequantizeLinear`, per tensor or per axis.
struct QuantizeLinearKernel: OperatorKernel {
    let node: String
    let axis: Int
    let quantizes: Bool

    var op: String { quantizes ? "QuantizeLinear" : "DequantizeLinear" }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        let scale = try inputs.required(1, node).type
        let zeroPoint = inputs.count > 2 ? inputs[2] : nil
        guard scale.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: op, "scale must be float32, is \(scale.dtype)")
        }
        let count = scale.shape.reduce(1, *)
        if count > 1 {
            let resolved = try resolveAxis(axis, rank: x.shape.count, node)
            guard scale.shape.count == 1, scale.shape[0] == x.shape[resolved] else {
                throw ONNXError.shapeMismatch(
                    node, op: op, "scale \(scale.shape) does not match axis \(resolved) of \(x.shape) (blocked quantization is not supported)")
            }
        }
        if let zeroPoint, zeroPoint.type.shape.reduce(1, *) != count {
            throw ONNXError.shapeMismatch(node, op: op, "zero point \(zeroPoint.type.shape) does not match scale \(scale.shape)")
        }
        let integerTypes: [DType] = [.int8, .uint8, .int16, .uint16, .int32]
        if quantizes {
            guard x.dtype == .float32 else {
                throw ONNXError.invalidNode(node, op: op, "input type \(x.dtype) is not supported (float32 is)")
            }
            let target = zeroPoint?.type.dtype ?? .uint8
            guard integerTypes.contains(target) else {
                throw ONNXError.invalidNode(node, op: op, "output type \(target) is not supported")
            }
            return [TensorType(x.shape, target)]
        }
        guard integerTypes.contains(x.dtype) else {
            throw ONNXError.invalidNode(node, op: op, "input type \(x.dtype) is not supported")
        }
        return [TensorType(x.shape, .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let x = inputs[0]!
        let scales = inputs[1]!.scalars(as: Float.self)
        let zeroPoints = inputs.count > 2 ? inputs[2]?.doubles() ?? [] : []
        let resolved = scales.count > 1 ? try resolveAxis(axis, rank: x.rank, node) : 0
        if quantizes {
            AffineQuantization.quantize(x, scales: scales, zeroPoints: zeroPoints, axis: resolved, into: outputs[0])
        } else {
            AffineQuantization.dequantize(x, scales: scales, zeroPoints: zeroPoints, axis: resolved, into: outputs[0])
        }
    }
}
