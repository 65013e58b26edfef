/// A block of memory that holds tensor elements: either its own allocation or
/// a window into a larger block (an activation arena).
///
/// Storage is shared by reference: copying a ``Tensor`` copies the view, not the
/// elements. Kernels write only into the storage of the tensors they were given
/// as outputs, and one executor run owns its arena, so there is no concurrent
/// mutation to guard against; that is why the class is `@unchecked Sendable`.
public final class TensorStorage: @unchecked Sendable {
    /// Alignment of every allocation, in bytes (a cache line, enough for any SIMD width we use).
    public static let alignment = 64

    let base: UnsafeMutableRawPointer
    /// Size of the block, in bytes.
    public let byteCount: Int
    private let parent: TensorStorage?

    /// Allocates `byteCount` zeroed bytes.
    public init(byteCount: Int) {
        let size = max(byteCount, 1)
        base = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: Self.alignment)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        self.byteCount = byteCount
        parent = nil
    }

    /// A window of `byteCount` bytes starting `offset` bytes into `parent`.
    public init(viewOf parent: TensorStorage, offset: Int, byteCount: Int) {
        precondition(offset >= 0 && offset + byteCount <= parent.byteCount, "storage view out of bounds")
        base = parent.base + offset
        self.byteCount = byteCount
        self.parent = parent
    }

    deinit {
        if parent == nil { base.deallocate() }
    }

    /// Sets every byte to `byte` (0xFF makes every float a NaN: tests poison reused memory so).
    public func fill(byte: UInt8) {
        base.initializeMemory(as: UInt8.self, repeating: byte, count: byteCount)
    }
}
