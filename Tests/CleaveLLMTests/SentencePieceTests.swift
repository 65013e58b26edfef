import Foundation
import Testing

@testable import CleaveLLM

/// SentencePiece (`tokenizer.ggml.model = llama`) on a small vocabulary made here, against
/// token ids recorded from llama.cpp's `llama-tokenize` on the same file (llama-cpp-python
/// 0.3.36 source package). To re-record: `CLEAVE_SPM_FIXTURE=/tmp/spm.gguf swift test
/// --filter SentencePieceTests` writes the file, then run `llama-tokenize -m /tmp/spm.gguf
/// -p TEXT --ids --log-disable` for each string.
@Suite struct SentencePieceTests {
    static let pieces = [
        "▁t", "he", "▁the", "in", "er", "an", "▁a", "on", "▁w", "re", "▁s", "or", "is", "▁is", "at", "▁c", "ll", "en", "▁th",
        "▁that", "▁he", "llo", "▁hello", "▁wor", "ld", "▁world", "ing", "▁m", "▁on", "▁ca", "af", "▁caf", "é", "▁café", "ou",
        "▁y", "▁you", "'t", "▁don", "12", "123", "▁1", "▁12", "ma", "▁ma", "▁mat", "▁cat", "▁H", "▁He", "▁Hello", "▁▁", "▁▁▁",
        "ü", "▁ü", "üb", "▁über", "ai", "▁l", "▁lai", "▁lait", "▁E", "ND", "▁END",
    ]
    static let characters = Array("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-").map(String.init)

    /// The vocabulary file: <unk>, <s>, </s>, 256 byte tokens, the pieces (scores −0, −1, …), then
    /// single characters (scores −1000 and below).
    static func vocabularyFile() -> [UInt8] {
        var tokens = ["<unk>", "<s>", "</s>"]
        var types: [Int32] = [2, 3, 3]
        var scores: [Float] = [0, 0, 0]
        for byte in 0...255 {
            tokens.append(Tokenizer.byteTokenText(UInt8(byte)))
            types.append(6)
            scores.append(0)
        }
        for (i, piece) in pieces.enumerated() {
            tokens.append(piece)
            types.append(1)
            scores.append(-Float(i))
        }
        for (i, character) in characters.enumerated() where !tokens.contains(character) {
            tokens.append(character)
            types.append(1)
            scores.append(-1000 - Float(i))
        }
        var writer = GGUFWriter()
        writer.set("general.architecture", .string("llama"))
        for (key, value) in [
            ("block_count", 1), ("embedding_length", 64), ("feed_forward_length", 96), ("attention.head_count", 4),
            ("attention.head_count_kv", 4), ("context_length", 64),
        ] {
            writer.set("llama.\(key)", .uint32(UInt32(value)))
        }
        writer.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-5))
        writer.set("tokenizer.ggml.model", .string("llama"))
        writer.set("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) }))
        writer.set("tokenizer.ggml.scores", .array(.float32, scores.map { .float32($0) }))
        writer.set("tokenizer.ggml.token_type", .array(.int32, types.map { .int32($0) }))
        writer.set("tokenizer.ggml.bos_token_id", .uint32(1))
        writer.set("tokenizer.ggml.eos_token_id", .uint32(2))
        writer.set("tokenizer.ggml.unknown_token_id", .uint32(0))
        return writer.bytes()
    }

    static let recorded: [(String, [Int32])] = [
        ("Hello world", [1, 308, 284]),
        ("hello world", [1, 281, 284]),
        ("the cat is on the mat", [1, 261, 305, 272, 287, 261, 304]),
        ("café au lait", [1, 292, 265, 343, 318]),
        ("über", [1, 312, 324, 263]),
        ("日本語", [1, 322, 233, 154, 168, 233, 159, 175, 235, 173, 161]),
        ("🦙 llama", [1, 322, 243, 162, 169, 156, 322, 275, 323, 302]),
        ("a  b   c", [1, 265, 309, 324, 309, 274]),
        ("<s>hello</s>", [1, 1, 281, 2]),
        ("hello<s>world", [1, 281, 1, 284]),
        ("don't stop", [1, 322, 326, 266, 296, 269, 342, 337, 338]),
        ("12345 123", [1, 322, 299, 379, 380, 322, 299]),
        ("\ttab\nnew line", [1, 322, 12, 342, 323, 324, 13, 336, 327, 345, 316, 262, 327]),
        (" leading", [1, 309, 334, 327, 323, 326, 285]),
        ("trailing ", [1, 259, 340, 315, 334, 285, 322]),
        ("THE END.", [1, 322, 368, 356, 353, 321, 385]),
        ("x", [1, 322, 346]),
        ("naïve résumé", [1, 322, 336, 323, 198, 178, 344, 327, 322, 340, 291, 341, 343, 335, 291]),
        ("—dash", [1, 322, 229, 131, 151, 326, 323, 341, 330]),
        ("Hello, world! Is that you?", [1, 308, 386, 284, 387, 322, 357, 341, 278, 295, 388]),
    ]

    @Test func idsEqualLlamaCpp() throws {
        let bytes = Self.vocabularyFile()
        if let path = ProcessInfo.processInfo.environment["CLEAVE_SPM_FIXTURE"] {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        let tokenizer = try Tokenizer(try GGUFFile(bytes: bytes))
        #expect(tokenizer.algorithm == .sentencePiece(addSpacePrefix: true))
        for (text, ids) in Self.recorded {
            #expect(tokenizer.encode(text) == ids, "\(String(reflecting: text))")
        }
    }

    @Test func decodingGivesTheTextBackWithTheSpacePrefix() throws {
        let tokenizer = try Tokenizer(try GGUFFile(bytes: Self.vocabularyFile()))
        for (text, _) in Self.recorded where !text.contains("<s>") {
            #expect(tokenizer.decode(tokenizer.encode(text, addBOS: false)) == " " + text, "\(String(reflecting: text))")
        }
    }
}
