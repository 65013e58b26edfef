/// Working memory that kernels reuse (the im2col matrix of a convolution, a padded plane):
/// it grows to the largest request and is kept, so that a run allocates nothing.
///
/// Allocating and freeing megabytes per convolution made the C allocator hand the pages
/// back to the kernel and fault them in again on every call (a third of ResNet-18's time
/// once BatchNormalization was folded, `docs/benchmarks.md`). One executor run owns a
/// buffer at a time (``InferenceSession`` checks them out), which is why the class is
/// `@unchecked Sendable`, like ``TensorStorage``.
public final class ScratchBuffer: @unchecked Sendable {
    private var storage: TensorStorage?

    /// An empty buffer; memory is taken on first use.
    public init() {}

    /// Bytes held now.
    public var byteCount: Int { storage?.byteCount ?? 0 }

    /// At least `count` floats, uninitialized, valid until the next call.
    func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        if let storage, storage.byteCount >= bytes { return storage.base.assumingMemoryBound(to: Float.self) }
        let grown = TensorStorage(byteCount: max(bytes, byteCount + byteCount / 2))
        storage = grown
        return grown.base.assumingMemoryBound(to: Float.self)
    }
}
