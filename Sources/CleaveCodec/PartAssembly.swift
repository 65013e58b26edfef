import CleaveTensor

/// Puts one request's tensor together from its parts (frames with a ``FrameRegion``), in
/// whatever order they arrive: each part is copied into place, a part sent again (a retry
/// resends them all) is ignored, and a part that covers positions another part already
/// covered, or that disagrees on the count of parts, is refused.
public struct PartAssembly: Sendable {
    /// Why a part cannot be used.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// The whole tensor's shape (NCHW).
    public let shape: [Int]
    /// Parts the request has, from its first part.
    public let parts: Int
    private var values: [Float]
    private var received: Set<FrameRegion> = []
    /// Which spatial positions a part has filled (row-major).
    private var covered: [Bool]
    private var coveredCount = 0

    /// An empty tensor of `shape`, for a request of `parts` parts.
    public init(shape: [Int], parts: Int) {
        precondition(shape.count == 4 && parts >= 1, "parts assemble NCHW tensors")
        self.shape = shape
        self.parts = parts
        values = [Float](repeating: 0, count: shape.reduce(1, *))
        covered = [Bool](repeating: false, count: shape[2] * shape[3])
    }

    /// Whether every part is in and every position covered.
    public var isComplete: Bool { received.count == parts && coveredCount == covered.count }

    /// Parts received so far.
    public var receivedParts: Int { received.count }

    /// Adds a decoded part; returns false for a part already added.
    @discardableResult
    public mutating func add(_ part: DecodedFrame) throws(Refusal) -> Bool {
        guard let region = part.region else { throw Refusal(description: "the frame is not a part (it carries no region)") }
        guard region.parts == parts else {
            throw Refusal(description: "the part says the request has \(region.parts) parts, an earlier part said \(parts)")
        }
        let (channels, height, width) = (shape[1], shape[2], shape[3])
        guard part.tensor.shape == [shape[0], channels, region.height, region.width],
            region.top + region.height <= height, region.left + region.width <= width
        else {
            throw Refusal(description: "the part \(part.tensor.shape) at \(region) does not fit the tensor \(shape)")
        }
        if received.contains(region) { return false }
        guard received.count < parts else { throw Refusal(description: "more than the \(parts) parts the request announced") }
        for row in region.top..<(region.top + region.height) {
            for column in region.left..<(region.left + region.width) where covered[row * width + column] {
                throw Refusal(description: "the part at \(region) overlaps an earlier part at row \(row), column \(column)")
            }
        }
        let source = part.tensor.scalars(as: Float.self)
        for batch in 0..<shape[0] {
            for channel in 0..<channels {
                let plane = (batch * channels + channel) * height * width
                let partPlane = (batch * channels + channel) * region.height * region.width
                for row in 0..<region.height {
                    let to = plane + (region.top + row) * width + region.left
                    let from = partPlane + row * region.width
                    for column in 0..<region.width { values[to + column] = source[from + column] }
                }
            }
        }
        for row in region.top..<(region.top + region.height) {
            for column in region.left..<(region.left + region.width) { covered[row * width + column] = true }
        }
        coveredCount += region.height * region.width
        received.insert(region)
        return true
    }

    /// The assembled tensor (all zero where no part has arrived yet).
    public var tensor: Tensor { Tensor(shape: shape, scalars: values) }
}
