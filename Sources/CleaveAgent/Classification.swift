import CleaveTensor

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Turns logits into a class and its softmax probability.
enum Classification {
    static func top(_ logits: Tensor) -> (Int, Float) {
        let values = logits.scalars(as: Float.self)
        guard let best = values.indices.max(by: { values[$0] < values[$1] }) else { return (0, 0) }
        let sum = values.reduce(Float(0)) { $0 + expf($1 - values[best]) }
        return (best, 1 / sum)
    }
}
