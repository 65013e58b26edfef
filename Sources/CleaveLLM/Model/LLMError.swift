/// Why a model cannot run an input, with the offending value in the message.
public struct LLMError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of problem it is (callers branch on this; the text is for people).
    public enum Kind: Sendable, Equatable {
        case emptyInput
        case tokenOutOfRange
        case contextFull
        case invalidSampling
        /// A tensor-parallel plan or slice that cannot be made or used.
        case invalidPlan
        /// A shard worker that failed, answered wrongly or holds something else.
        case worker
    }

    public let kind: Kind
    public let description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }

    static let emptyInput = LLMError(.emptyInput, "no tokens to evaluate: the prompt is empty")

    static func tokenOutOfRange(_ token: Int32, vocabulary: Int) -> LLMError {
        LLMError(.tokenOutOfRange, "token id \(token) is outside the vocabulary of \(vocabulary) tokens")
    }

    static func contextFull(needed: Int, capacity: Int) -> LLMError {
        LLMError(.contextFull, "the context needs \(needed) positions, the KV cache holds \(capacity)")
    }

    static func invalidSlice(_ reason: String) -> LLMError { LLMError(.invalidPlan, reason) }
}
