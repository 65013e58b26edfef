import Testing

@testable import CleaveLLM

#if canImport(Glibc)
    import Glibc
#endif

/// SmolLM2's real vocabulary against token ids recorded from llama.cpp's `llama-tokenize`
/// (built from the llama-cpp-python 0.3.36 source package). `scripts/test.sh` fetches the
/// model first (`scripts/fetch-smollm2.sh`) and passes its path in `CLEAVE_SMOLLM2`.
@Suite struct SmolLM2TokenizerTests {
    static let modelPath: String? = getenv("CLEAVE_SMOLLM2").map { String(cString: $0) }

    static let recorded: [(String, [Int32])] = [
        ("Hello world!", [19556, 905, 17]),
        ("In 2026 there were 1,024 boards.", [788, 216, 34, 32, 34, 38, 665, 592, 216, 33, 28, 32, 34, 36, 12087, 30]),
        ("It's, I'm, we'll, they've", [1589, 506, 28, 339, 5248, 28, 392, 3060, 28, 502, 3543]),
        ("Größe, naïve café", [27302, 7466, 34878, 85, 28, 15486, 46494, 37366]),
        ("こんにちは世界", [7365, 237, 10391, 237, 41152, 7365, 111, 7365, 124, 7906, 240, 178, 239, 230]),
        ("🦙🦙 llamas 🦙", [10813, 116, 243, 10813, 116, 243, 303, 4130, 292, 15107, 116, 243]),
        ("def f(x):\n    return x * 2\n", [1604, 275, 24, 104, 727, 472, 1003, 1792, 1672, 216, 34, 198]),
        ("<|im_start|>user\nHi!<|im_end|>\n", [1, 4093, 198, 26843, 17, 2, 198]),
        ("  spaces   and\ttabs\n\n", [216, 5600, 256, 284, 197, 100, 7366, 1116]),
        (String(repeating: "x", count: 40), [Int32](repeating: 31069, count: 10)),
    ]

    @Test(.enabled(if: modelPath != nil, "set CLEAVE_SMOLLM2 to the fetched model (scripts/test.sh does)"))
    func idsEqualLlamaCpp() throws {
        let tokenizer = try Tokenizer(try GGUFFile(contentsOf: try #require(Self.modelPath)))
        #expect(tokenizer.preTokenizer == .smollm)
        #expect(tokenizer.tokens.count == 49152)
        for (text, expected) in Self.recorded {
            let ids = tokenizer.encode(text)
            #expect(ids == expected, "\(text.debugDescription)")
            #expect(tokenizer.decode(ids) == text)
        }
    }
}
