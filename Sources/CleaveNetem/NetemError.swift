/// A link description, trace or scenario that cannot be used, with the reason.
public struct NetemError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) { self.description = description }
}
