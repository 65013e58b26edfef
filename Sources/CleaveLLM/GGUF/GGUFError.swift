/// Why a GGUF file cannot be read or used, with the offending value in the message.
public struct GGUFError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of problem it is (tests and callers branch on this; the text is for people).
    public enum Kind: Sendable, Equatable {
        case cannotOpen
        case truncated
        case badMagic
        case unsupportedVersion
        case limitExceeded
        case malformed
        case misaligned
        case unknownTensorType
        case unsupportedTensorType
        case missingKey
        case missingTensor
        case wrongValueType
        case unsupportedArchitecture
    }

    public let kind: Kind
    public let description: String

    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }

    static func cannotOpen(_ path: String, _ reason: String) -> GGUFError {
        GGUFError(.cannotOpen, "cannot open \(path): \(reason)")
    }

    static func truncated(_ what: String, at offset: Int, needed: Int, fileSize: Int) -> GGUFError {
        GGUFError(.truncated, "truncated GGUF: \(what) needs \(needed) bytes at offset \(offset), the file has \(fileSize)")
    }

    static func badMagic(_ found: [UInt8]) -> GGUFError {
        let shown = found.map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
        return GGUFError(.badMagic, "not a GGUF file: it starts with \"\(shown)\", not \"GGUF\"")
    }

    static func limitExceeded(_ what: String, _ value: UInt64, limit: UInt64) -> GGUFError {
        GGUFError(.limitExceeded, "\(what) is \(value), more than the limit \(limit)")
    }

    static func unsupportedTensorType(name: String, type: GGMLType) -> GGUFError {
        GGUFError(
            .unsupportedTensorType,
            "tensor '\(name)' has type \(type) (\(type.rawValue)), which Cleave cannot compute with; supported: "
                + GGMLType.computable.map(\.description).joined(separator: ", "))
    }

    static func missingKey(_ key: String) -> GGUFError {
        GGUFError(.missingKey, "the GGUF metadata has no key '\(key)'")
    }
}
