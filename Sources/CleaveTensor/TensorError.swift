/// A kernel refused its input because of the data it holds (not a programming error).
public struct TensorError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What went wrong, as a sentence naming the offending value.
    public let description: String

    /// An error with a message that names the problem.
    public init(_ description: String) { self.description = description }
}
