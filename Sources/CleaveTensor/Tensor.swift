/// An n-dimensional array with a shape, an element type and contiguous row-major storage.
///
/// `Tensor` is a value that *views* its storage: copies share elements (see
/// ``TensorStorage``). Use ``copy()`` for an independent tensor.
public struct Tensor: Sendable {
    /// Dimensions, outermost first. An empty shape is a scalar.
    public let shape: [Int]
    /// Element type.
    public let dtype: DType
    /// The memory the elements live in.
    public let storage: TensorStorage

    /// Number of elements (the product of the dimensions).
    public var count: Int { shape.reduce(1, *) }
    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Size of the elements, in bytes.
    public var byteCount: Int { count * dtype.byteSize }

    // MARK: - Creating tensors

    /// A zero-filled tensor with its own storage.
    public init(zeros shape: [Int], dtype: DType = .float32) {
        self.shape = shape
        self.dtype = dtype
        storage = TensorStorage(byteCount: shape.reduce(1, *) * dtype.byteSize)
    }

    /// A tensor that uses `storage` for its elements, which must be large enough.
    public init(shape: [Int], dtype: DType, storage: TensorStorage) {
        precondition(shape.reduce(1, *) * dtype.byteSize <= storage.byteCount, "storage too small for shape \(shape)")
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
    }

    /// A tensor holding `scalars` in row-major order; their count must match the shape.
    public init<T: TensorScalar>(shape: [Int], scalars: [T]) {
        precondition(scalars.count == shape.reduce(1, *), "\(scalars.count) scalars for shape \(shape)")
        self.init(zeros: shape, dtype: T.dtype)
        scalars.withUnsafeBufferPointer { source in
            storage.base.copyMemory(from: source.baseAddress!, byteCount: byteCount)
        }
    }

    /// A boolean tensor; `true` is stored as 1.
    public init(shape: [Int], booleans: [Bool]) {
        precondition(booleans.count == shape.reduce(1, *), "\(booleans.count) booleans for shape \(shape)")
        self.init(zeros: shape, dtype: .bool)
        let bytes = storage.base.assumingMemoryBound(to: UInt8.self)
        for (index, flag) in booleans.enumerated() { bytes[index] = flag ? 1 : 0 }
    }

    /// A tensor made from raw little-endian element bytes, as found in ONNX and `.npy` files.
    public init(shape: [Int], dtype: DType, bytes: some Collection<UInt8>) {
        self.init(zeros: shape, dtype: dtype)
        precondition(bytes.count == byteCount, "\(bytes.count) bytes for \(shape) of \(dtype)")
        let destination = UnsafeMutableRawBufferPointer(start: storage.base, count: byteCount)
        // `Data` and `[UInt8]` are contiguous: one copy, not a generic element loop.
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            destination.copyMemory(from: UnsafeRawBufferPointer(source))
        }
        if copied == nil { destination.copyBytes(from: bytes) }
    }

    /// The same elements seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot view \(shape) as \(newShape)")
        return Tensor(shape: newShape, dtype: dtype, storage: storage)
    }

    /// A deep copy with its own storage.
    public func copy() -> Tensor {
        let result = Tensor(zeros: shape, dtype: dtype)
        result.storage.base.copyMemory(from: storage.base, byteCount: byteCount)
        return result
    }

    // MARK: - Reading elements

    /// The elements as a Swift array; the element type must match ``dtype``.
    public func scalars<T: TensorScalar>(as type: T.Type = T.self) -> [T] {
        precondition(T.dtype == dtype, "tensor holds \(dtype), not \(T.dtype)")
        return Array(UnsafeBufferPointer(start: storage.base.assumingMemoryBound(to: T.self), count: count))
    }

    /// Every element converted to `Double` (booleans become 0 or 1).
    public func doubles() -> [Double] {
        switch dtype {
        case .float32: scalars(as: Float.self).map(Double.init)
        case .float64: scalars(as: Double.self)
        case .int8: scalars(as: Int8.self).map(Double.init)
        case .uint8, .bool:
            Array(UnsafeBufferPointer(start: storage.base.assumingMemoryBound(to: UInt8.self), count: count)).map(Double.init)
        case .int16: scalars(as: Int16.self).map(Double.init)
        case .uint16: scalars(as: UInt16.self).map(Double.init)
        case .int32: scalars(as: Int32.self).map(Double.init)
        case .int64: scalars(as: Int64.self).map(Double.init)
        }
    }

    /// Integer elements as `Int` (for shapes, axes and indices); floats are truncated.
    public func integers() -> [Int] {
        switch dtype {
        case .int64: scalars(as: Int64.self).map { Int($0) }
        case .int32: scalars(as: Int32.self).map { Int($0) }
        default: doubles().map { Int(Int64(clampingForCast: $0)) }
        }
    }

    /// The raw element bytes, little-endian.
    public func bytes() -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: storage.base, count: byteCount))
    }

    // MARK: - Package-internal access for kernels

    /// Typed pointer to the first element; for kernels inside this package.
    package func pointer<T>(as type: T.Type) -> UnsafeMutablePointer<T> {
        storage.base.assumingMemoryBound(to: T.self)
    }

    /// Typed buffer over all elements; for kernels inside this package.
    package func buffer<T>(as type: T.Type) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: pointer(as: T.self), count: count)
    }

    /// Raw pointer to the first byte; for kernels inside this package.
    package var rawPointer: UnsafeMutableRawPointer { storage.base }

    /// Copies all element bytes from `source`, which must have the same byte count.
    public func copyElements(from source: Tensor) {
        precondition(source.byteCount == byteCount, "copy of \(source.byteCount) bytes into \(byteCount)")
        if source.storage.base != storage.base {
            storage.base.copyMemory(from: source.storage.base, byteCount: byteCount)
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor<\(dtype)>\(shape)" }
}
