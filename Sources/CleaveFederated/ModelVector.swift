import CleaveTrain

/// The names and shapes of a model's tensors, in the order their values are laid end to end.
///
/// Every strategy works on one flat vector of floats; the layout says which run of
/// it is which tensor, so that per-tensor rules (scales, top-k per tensor) and the
/// wire format can find the tensors again.
public struct WeightLayout: Sendable, Equatable, Hashable {
    /// One tensor: its name in the exported model, its shape and where it starts in the vector.
    public struct Entry: Sendable, Equatable, Hashable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        /// Number of values (the product of the shape).
        public var count: Int { shape.reduce(1, *) }
        /// The values' positions in the flat vector.
        public var range: Range<Int> { offset..<(offset + count) }
    }

    public let entries: [Entry]

    /// A layout of `tensors` (name, shape) in this order.
    public init(_ tensors: [(name: String, shape: [Int])]) {
        var offset = 0
        var entries: [Entry] = []
        for tensor in tensors {
            entries.append(Entry(name: tensor.name, shape: tensor.shape, offset: offset))
            offset += tensor.shape.reduce(1, *)
        }
        self.entries = entries
    }

    /// The layout of a network's trainable parameters.
    public init(of parameters: [Parameter]) {
        self.init(parameters.map { ($0.name, $0.shape) })
    }

    /// Total number of values.
    public var count: Int { entries.last.map { $0.offset + $0.count } ?? 0 }
}

// MARK: - Moving weights between a network and a vector

extension [Parameter] {
    /// Every parameter's values laid end to end, in order.
    public func flattened() -> [Float] {
        var vector: [Float] = []
        vector.reserveCapacity(reduce(0) { $0 + $1.value.count })
        for parameter in self { vector += parameter.value }
        return vector
    }

    /// Sets every parameter from `vector` (laid out as ``flattened()`` makes it).
    ///
    /// - Throws: ``FederatedError`` when the vector has another length than the parameters.
    public func load(_ vector: [Float]) throws {
        let total = reduce(0) { $0 + $1.value.count }
        guard vector.count == total else {
            throw FederatedError("a model of \(vector.count) values does not fit this network's \(total) parameters")
        }
        var offset = 0
        for parameter in self {
            let count = parameter.value.count
            parameter.value = [Float](vector[offset..<(offset + count)])
            offset += count
        }
    }
}

/// A federated run that cannot go on as asked: a setting out of range, an update of another model.
public struct FederatedError: Error, Sendable, CustomStringConvertible, Equatable {
    public let description: String

    public init(_ description: String) { self.description = description }
}
