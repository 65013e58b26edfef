/// Fixed-point numbers and aligned columns without `String(format:)`, which needs all of
/// Foundation (and ICU): the lean agent prints its tables with these.
extension Double {
    /// The value rounded to `digits` places after the point (halves away from zero, on the
    /// scaled binary value, so an exact tie may differ from printf's): `3.14159.fixed(2)` is `3.14`,
    /// `2.0.fixed(0)` is `2`; not-a-number and infinities read `nan`, `inf`, `-inf`.
    public func fixed(_ digits: Int) -> String {
        precondition((0...9).contains(digits), "fixed(_:) takes 0 to 9 digits")
        guard isFinite else { return isNaN ? "nan" : (self < 0 ? "-inf" : "inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (magnitude * scale).rounded()
        guard scaled < 9.0e18 else { return "\(self)" }
        let units = UInt64(scaled)
        let divisor = UInt64(scale)
        let sign = self < 0 && units != 0 ? "-" : ""
        guard digits > 0 else { return "\(sign)\(units)" }
        let fraction = String(units % divisor)
        return "\(sign)\(units / divisor)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
}

extension String {
    /// The text right-aligned in `width` columns (longer text is left as it is).
    public func aligningRight(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }

    /// The text left-aligned in `width` columns (longer text is left as it is).
    public func aligningLeft(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
