extension Duration {
    /// The duration in seconds.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }

    /// The duration in milliseconds.
    public var milliseconds: Double { seconds * 1000 }

    /// A duration of `seconds` (fractional) seconds, to the microsecond.
    public static func seconds(fractional seconds: Double) -> Duration {
        .microseconds(Int64((seconds * 1e6).rounded()))
    }
}
