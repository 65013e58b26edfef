extension Sequence<Int> {
    /// The product of the elements, or nil when it overflows `Int` (sizes read from untrusted
    /// files: shapes, counts, byte sizes).
    public func checkedProduct() -> Int? {
        var product = 1
        for value in self {
            let (next, overflow) = product.multipliedReportingOverflow(by: value)
            if overflow { return nil }
            product = next
        }
        return product
    }
}
