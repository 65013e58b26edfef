/// NumPy-style (multidirectional) broadcasting of shapes, as ONNX defines it.
public enum Broadcast {
    /// The broadcast result of `shapes`, or `nil` when two dimensions disagree and neither is 1.
    public static func shape(_ shapes: [[Int]]) -> [Int]? {
        let rank = shapes.map(\.count).max() ?? 0
        var result = [Int](repeating: 1, count: rank)
        for shape in shapes {
            let offset = rank - shape.count
            for (index, dimension) in shape.enumerated() {
                let current = result[offset + index]
                if current == dimension || dimension == 1 { continue }
                if current == 1 { result[offset + index] = dimension } else { return nil }
            }
        }
        return result
    }

    /// Element strides of `shape` seen from an `outputShape` it broadcasts to (0 on broadcast dimensions).
    static func strides(of shape: [Int], in outputShape: [Int]) -> [Int] {
        let offset = outputShape.count - shape.count
        var strides = [Int](repeating: 0, count: outputShape.count)
        var running = 1
        for index in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[offset + index] = shape[index] == 1 ? 0 : running
            running *= shape[index]
        }
        return strides
    }

    /// Merges adjacent output dimensions that every operand walks contiguously, so that the
    /// inner loop is as long as possible. Returns the reduced shape and per-operand strides.
    static func coalesce(shape: [Int], strides: [[Int]]) -> (shape: [Int], strides: [[Int]]) {
        guard !shape.isEmpty else { return ([1], strides.map { _ in [0] }) }
        var newShape = [shape[0]]
        var newStrides = strides.map { [$0[0]] }
        for dimension in 1..<shape.count {
            let size = shape[dimension]
            let mergeable = strides.indices.allSatisfy { operand in
                let outer = newStrides[operand][newStrides[operand].count - 1]
                let inner = strides[operand][dimension]
                return outer == inner * size
            }
            if mergeable {
                newShape[newShape.count - 1] *= size
                for operand in strides.indices { newStrides[operand][newStrides[operand].count - 1] = strides[operand][dimension] }
            } else {
                newShape.append(size)
                for operand in strides.indices { newStrides[operand].append(strides[operand][dimension]) }
            }
        }
        return (newShape, newStrides)
    }
}

// MARK: - Binary element-wise kernels

/// The element-wise arithmetic operators with broadcasting.
public enum BinaryOperator: String, Sendable {
    case add, subtract, multiply, divide

    func floating<T: BinaryFloatingPoint>(_ type: T.Type) -> (T, T) -> T {
        switch self {
        case .add: { $0 + $1 }
        case .subtract: { $0 - $1 }
        case .multiply: { $0 * $1 }
        case .divide: { $0 / $1 }
        }
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type) -> (T, T) -> T {
        switch self {
        case .add: { $0 &+ $1 }
        case .subtract: { $0 &- $1 }
        case .multiply: { $0 &* $1 }
        case .divide: { $1 == 0 ? 0 : $0.dividedReportingOverflow(by: $1).partialValue }
        }
    }
}

extension BinaryOperator {
    /// Writes `lhs ∘ rhs` (broadcast) into `output`, whose shape must be the broadcast shape.
    public func apply(_ lhs: Tensor, _ rhs: Tensor, into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1)) {
        precondition(lhs.dtype == rhs.dtype && lhs.dtype == output.dtype, "binary \(self) on mixed types")
        if output.dtype == .float32, lhs.shape == rhs.shape {
            sameShape(lhs.pointer(as: Float.self), rhs.pointer(as: Float.self), output.pointer(as: Float.self), count: output.count, pool: pool)
            return
        }
        switch output.dtype {
        case .float32: Self.run(lhs, rhs, output, floating(Float.self), pool)
        case .float64: Self.run(lhs, rhs, output, floating(Double.self), pool)
        case .int8: Self.run(lhs, rhs, output, integer(Int8.self), pool)
        case .uint8: Self.run(lhs, rhs, output, integer(UInt8.self), pool)
        case .int16: Self.run(lhs, rhs, output, integer(Int16.self), pool)
        case .uint16: Self.run(lhs, rhs, output, integer(UInt16.self), pool)
        case .int32: Self.run(lhs, rhs, output, integer(Int32.self), pool)
        case .int64: Self.run(lhs, rhs, output, integer(Int64.self), pool)
        case .bool: preconditionFailure("arithmetic on bool")
        }
    }

    /// Float operands of one shape (a residual Add, a gate Mul): loops the vectorizer can see
    /// through, where the generic path calls a closure per element (measured 0.8 ms for one
    /// 64×56×56 Add of ResNet-18, against 0.05 ms for this loop).
    private func sameShape(
        _ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool
    ) {
        pool.parallelFor(count, minimumChunk: 1 << 15) { range in
            switch self {
            case .add: for index in range { c[index] = a[index] + b[index] }
            case .subtract: for index in range { c[index] = a[index] - b[index] }
            case .multiply: for index in range { c[index] = a[index] * b[index] }
            case .divide: for index in range { c[index] = a[index] / b[index] }
            }
        }
    }

    private static func run<T>(_ lhs: Tensor, _ rhs: Tensor, _ output: Tensor, _ f: (T, T) -> T, _ pool: ThreadPool) {
        let a = lhs.pointer(as: T.self)
        let b = rhs.pointer(as: T.self)
        let c = output.pointer(as: T.self)
        let total = output.count
        if lhs.shape == rhs.shape {
            pool.parallelFor(total, minimumChunk: 1 << 15) { range in
                for index in range { c[index] = f(a[index], b[index]) }
            }
            return
        }
        let (shape, strides) = Broadcast.coalesce(
            shape: output.shape,
            strides: [Broadcast.strides(of: lhs.shape, in: output.shape), Broadcast.strides(of: rhs.shape, in: output.shape)])
        let inner = shape[shape.count - 1]
        let strideA = strides[0][shape.count - 1]
        let strideB = strides[1][shape.count - 1]
        let rows = total / max(inner, 1)
        guard inner > 0 else { return }
        pool.parallelFor(rows, minimumChunk: max(1, (1 << 15) / inner)) { range in
            for row in range {
                var offsetA = 0
                var offsetB = 0
                var remainder = row
                for dimension in stride(from: shape.count - 2, through: 0, by: -1) {
                    let coordinate = remainder % shape[dimension]
                    remainder /= shape[dimension]
                    offsetA += coordinate * strides[0][dimension]
                    offsetB += coordinate * strides[1][dimension]
                }
                let out = c + row * inner
                for index in 0..<inner { out[index] = f(a[offsetA + index * strideA], b[offsetB + index * strideB]) }
            }
        }
    }
}
