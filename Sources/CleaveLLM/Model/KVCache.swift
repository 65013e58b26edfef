/// Keys and values of every layer for the positions seen so far, in float16.
///
/// float16 halves the memory of float32 and is what llama.cpp keeps by default;
/// SmolLM2-135M needs 30 layers × 2 × 192 values × 2 bytes = 23 KB per position.
/// The buffers are reserved for `capacity` positions up front but the operating
/// system only backs the pages that positions actually reach.
public final class KVCache {
    /// Positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far (the next token's position).
    public private(set) var count = 0
    /// Values per position and layer: key/value heads × head size.
    let width: Int
    private let keys: [UnsafeMutablePointer<Float16>]
    private let values: [UnsafeMutablePointer<Float16>]

    init(layers: Int, width: Int, capacity: Int) {
        self.capacity = capacity
        self.width = width
        keys = (0..<layers).map { _ in .allocate(capacity: capacity * width) }
        values = (0..<layers).map { _ in .allocate(capacity: capacity * width) }
    }

    deinit {
        for buffer in keys + values { buffer.deallocate() }
    }

    /// Bytes the cache would take when full.
    public var bytes: Int { 2 * keys.count * capacity * width * MemoryLayout<Float16>.size }

    /// Forgets every position (a new conversation).
    public func reset() { count = 0 }

    /// Forgets the positions from `position` on (to regenerate from there).
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= count, "cannot truncate a cache of \(count) positions to \(position)")
        count = position
    }

    /// The key of `position` in `layer`, all key/value heads.
    func key(_ layer: Int, _ position: Int) -> UnsafeMutablePointer<Float16> { keys[layer] + position * width }

    /// The value of `position` in `layer`, all key/value heads.
    func value(_ layer: Int, _ position: Int) -> UnsafeMutablePointer<Float16> { values[layer] + position * width }

    /// Stores `tokens` rows of keys and values (float32, `width` each) from position ``count`` on.
    func store(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, tokens: Int) {
        precondition(count + tokens <= capacity, "KV cache full: \(capacity) positions")
        for i in 0..<(tokens * width) {
            keys[layer][count * width + i] = Float16(k[i])
            values[layer][count * width + i] = Float16(v[i])
        }
    }

    /// Marks `tokens` more positions as filled (after every layer has stored them).
    func advance(by tokens: Int) { count += tokens }
}
