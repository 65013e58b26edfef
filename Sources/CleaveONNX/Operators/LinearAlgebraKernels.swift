import CleaveTensor

// MARK: - Gemm

struct GemmKernel: OperatorKernel {
    let node: String
    let alpha: Float
    let beta: Float
    let transposeA: Bool
    let transposeB: Bool

    func dimensions(_ a: [Int], _ b: [Int]) throws -> (m: Int, n: Int, k: Int) {
        guard a.count == 2, b.count == 2 else {
            throw ONNXError.shapeMismatch(node, op: "Gemm", "A \(a) and B \(b) must be matrices")
        }
        let (m, k) = transposeA ? (a[1], a[0]) : (a[0], a[1])
        let (kb, n) = transposeB ? (b[1], b[0]) : (b[0], b[1])
        guard k == kb else {
            throw ONNXError.shapeMismatch(
                node, op: "Gemm", "A \(a)\(transposeA ? "ᵀ" : "") and B \(b)\(transposeB ? "ᵀ" : "") have inner sizes \(k) and \(kb)")
        }
        return (m, n, k)
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let a = try inputs.required(0, node).type
        let b = try inputs.required(1, node).type
        guard a.dtype == .float32, b.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "Gemm", "only float32 is supported")
        }
        let (m, n, _) = try dimensions(a.shape, b.shape)
        if inputs.count > 2, let c = inputs[2] {
            guard Broadcast.shape([c.type.shape, [m, n]]) == [m, n] else {
                throw ONNXError.shapeMismatch(node, op: "Gemm", "C \(c.type.shape) does not broadcast to [\(m), \(n)]")
            }
        }
        return [TensorType([m, n], .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let a = inputs[0]!
        let b = inputs[1]!
        let (m, n, k) = try dimensions(a.shape, b.shape)
        let y = outputs[0].pointer(as: Float.self)
        var gemmBeta: Float = 0
        if inputs.count > 2, let c = inputs[2], beta != 0 {
            let shape = [Int](repeating: 1, count: 2 - min(c.rank, 2)) + c.shape.suffix(2)
            let rowStride = shape[0] == 1 ? 0 : shape[1]
            let columnStride = shape[1] == 1 ? 0 : 1
            let source = c.pointer(as: Float.self)
            for row in 0..<m {
                for column in 0..<n { y[row * n + column] = source[row * rowStride + column * columnStride] }
            }
            gemmBeta = beta
        }
        GEMM.multiply(
            m: m, n: n, k: k,
            a: a.pointer(as: Float.self), lda: a.shape[1], transposeA: transposeA,
            b: b.pointer(as: Float.self), ldb: b.shape[1], transposeB: transposeB,
            c: y, ldc: n, alpha: alpha, beta: gemmBeta, pool: context.pool)
    }
}

// MARK: - MatMul

/// NumPy `matmul`: batched over leading dimensions with broadcasting, 1-d operands promoted.
struct MatMulKernel: OperatorKernel {
    let node: String

    struct Layout {
        let m, n, k: Int
        let batchShape: [Int]
        let aBatchStrides: [Int]
        let bBatchStrides: [Int]
        let outputShape: [Int]
    }

    func layout(_ a: [Int], _ b: [Int]) throws -> Layout {
        guard !a.isEmpty, !b.isEmpty else {
            throw ONNXError.shapeMismatch(node, op: "MatMul", "scalars cannot be multiplied as matrices")
        }
        let aShape = a.count == 1 ? [1, a[0]] : a
        let bShape = b.count == 1 ? [b[0], 1] : b
        let (m, k) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
        let (kb, n) = (bShape[bShape.count - 2], bShape[bShape.count - 1])
        guard k == kb else {
            throw ONNXError.shapeMismatch(node, op: "MatMul", "\(a) × \(b): inner sizes \(k) and \(kb) differ")
        }
        let aBatch = Array(aShape.dropLast(2))
        let bBatch = Array(bShape.dropLast(2))
        guard let batch = Broadcast.shape([aBatch, bBatch]) else {
            throw ONNXError.shapeMismatch(node, op: "MatMul", "batch dimensions of \(a) and \(b) do not broadcast")
        }
        var outputShape = batch
        if a.count > 1 { outputShape.append(m) }
        if b.count > 1 { outputShape.append(n) }
        return Layout(
            m: m, n: n, k: k, batchShape: batch,
            aBatchStrides: batchStrides(aBatch, batch, matrix: m * k),
            bBatchStrides: batchStrides(bBatch, batch, matrix: k * n),
            outputShape: outputShape)
    }

    private func batchStrides(_ shape: [Int], _ batch: [Int], matrix: Int) -> [Int] {
        let padded = [Int](repeating: 1, count: batch.count - shape.count) + shape
        var strides = [Int](repeating: 0, count: batch.count)
        var running = matrix
        for axis in stride(from: batch.count - 1, through: 0, by: -1) {
            strides[axis] = padded[axis] == 1 ? 0 : running
            running *= padded[axis]
        }
        return strides
    }

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let a = try inputs.required(0, node).type
        let b = try inputs.required(1, node).type
        guard a.dtype == .float32, b.dtype == .float32 else {
            throw ONNXError.invalidNode(node, op: "MatMul", "only float32 is supported, got \(a.dtype) and \(b.dtype)")
        }
        return [TensorType(try layout(a.shape, b.shape).outputShape, .float32)]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let plan = try layout(inputs[0]!.shape, inputs[1]!.shape)
        let a = inputs[0]!.pointer(as: Float.self)
        let b = inputs[1]!.pointer(as: Float.self)
        let y = outputs[0].pointer(as: Float.self)
        let batches = plan.batchShape.reduce(1, *)
        for batch in 0..<batches {
            var remainder = batch
            var aOffset = 0
            var bOffset = 0
            for axis in stride(from: plan.batchShape.count - 1, through: 0, by: -1) {
                let coordinate = remainder % plan.batchShape[axis]
                remainder /= plan.batchShape[axis]
                aOffset += coordinate * plan.aBatchStrides[axis]
                bOffset += coordinate * plan.bBatchStrides[axis]
            }
            GEMM.multiply(
                m: plan.m, n: plan.n, k: plan.k, a: a + aOffset, lda: plan.k, b: b + bOffset, ldb: plan.n,
                c: y + batch * plan.m * plan.n, ldc: plan.n, pool: context.pool)
        }
    }
}

// MARK: - BatchNormalization

struct BatchNormKernel: OperatorKernel {
    let node: String
    let epsilon: Float
    let momentum: Float
    let training: Bool

    func outputTypes(_ inputs: [InputInfo?]) throws -> [TensorType] {
        let x = try inputs.required(0, node).type
        guard x.dtype == .float32, x.shape.count >= 2 else {
            throw ONNXError.invalidNode(node, op: "BatchNormalization", "input must be float32 with a channel axis, got \(x)")
        }
        for index in 1...4 {
            let parameter = try inputs.required(index, node)
            guard parameter.type.shape == [x.shape[1]] else {
                throw ONNXError.shapeMismatch(
                    node, op: "BatchNormalization", "\(parameter.name) has shape \(parameter.type.shape), expected [\(x.shape[1])]")
            }
        }
        let statistics = TensorType([x.shape[1]], .float32)
        return training ? [x, statistics, statistics] : [x]
    }

    func run(_ inputs: [Tensor?], _ outputs: [Tensor], _ context: ExecutionContext) throws {
        let x = inputs[0]!
        let scale = inputs[1]!.scalars(as: Float.self)
        let bias = inputs[2]!.scalars(as: Float.self)
        var mean = inputs[3]!.scalars(as: Float.self)
        var variance = inputs[4]!.scalars(as: Float.self)
        if training {
            let batch = Normalization.channelStatistics(x)
            let runningMean = zip(mean, batch.mean).map { $0 * momentum + $1 * (1 - momentum) }
            let runningVariance = zip(variance, batch.variance).map { $0 * momentum + $1 * (1 - momentum) }
            if outputs.count > 1 { _ = outputs[1].buffer(as: Float.self).update(fromContentsOf: runningMean) }
            if outputs.count > 2 { _ = outputs[2].buffer(as: Float.self).update(fromContentsOf: runningVariance) }
            (mean, variance) = (batch.mean, batch.variance)
        }
        let folded = Normalization.foldedBatchNorm(scale: scale, bias: bias, mean: mean, variance: variance, epsilon: epsilon)
        Normalization.channelAffine(input: x, scale: folded.scale, shift: folded.shift, into: outputs[0], pool: context.pool)
    }
}
