import Testing

@testable import CleaveLLM

@Suite struct TokenizerTests {
    func words(_ pre: PreTokenizer, _ text: String) -> [String] { pre.words(text).map { String($0) } }

    @Test func gpt2RulesSplitWords() {
        #expect(words(.gpt2, "Hello  world's 123!") == ["Hello", " ", " world", "'s", " 123", "!"])
        #expect(words(.gpt2, "a\n\n b") == ["a", "\n\n", " b"])
        #expect(words(.gpt2, "x   ") == ["x", "   "])
        #expect(words(.gpt2, "I'M") == ["I", "'", "M"])  // contractions are lower case only
        #expect(words(.gpt2, "naïve café") == ["naïve", " café"])
        #expect(words(.gpt2, "🦙🦙 ok") == ["🦙🦙", " ok"])
    }

    @Test func smollmSplitsEveryDigit() {
        #expect(words(.smollm, "in 2026, ok") == ["in", " ", "2", "0", "2", "6", ",", " ok"])
        #expect(words(.smollm, "x1y") == ["x", "1", "y"])
    }

    @Test func llama3Rules() {
        #expect(words(.llama3, "I'M 12345 ok\n\n  x") == ["I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"])
        #expect(words(.qwen2, "12 (a)") == ["1", "2", " (", "a", ")"])
    }

    /// Every string's words concatenate back to it, whatever the pre-tokenizer.
    @Test(arguments: [PreTokenizer.gpt2, .smollm, .llama3, .qwen2])
    func wordsCoverTheText(pre: PreTokenizer) {
        var random = SeededValues(state: 3)
        let alphabet = Array("ab Z9 \t\n'.,😀é中\u{301}\u{a0}".unicodeScalars)
        for _ in 0..<500 {
            var text = String.UnicodeScalarView()
            for _ in 0..<Int(random.next() % 30) { text.append(alphabet[Int(random.next() % UInt64(alphabet.count))]) }
            let string = String(text)
            #expect(pre.words(string).map { String($0) }.joined() == string)
        }
    }

    /// A vocabulary of the 256 byte symbols plus a few merges.
    func tinyTokenizer() throws -> Tokenizer {
        var tokens = (0...255).map { String(ByteAlphabet.scalar(for: UInt8($0))) }
        var types = [Int32](repeating: 1, count: 256)
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
        for merge in merges { tokens.append(merge.replacingOccurrences(of: " ", with: "")) }
        types += [Int32](repeating: 1, count: merges.count)
        tokens.append("<|im_start|>")
        types.append(3)
        return try Tokenizer(tokens: tokens, types: types, merges: merges, preTokenizer: .gpt2)
    }

    @Test func mergesFollowTheirRanks() throws {
        let tokenizer = try tinyTokenizer()
        let ids = tokenizer.encode("hello wow")
        #expect(ids.map { tokenizer.tokens[Int($0)] } == ["hello", "Ġwo", "w"])
        #expect(tokenizer.encode("<|im_start|>hello").first == 262)
        #expect(tokenizer.encode("<|im_start|>", parseSpecial: false).count == 12)
    }

    @Test func decodingGivesTheTextBack() throws {
        let tokenizer = try tinyTokenizer()
        for text in ["hello world", "  spaces\tand\nnewlines  ", "Ünïcödé 🦙 中文", "<|im_start|>user", ""] {
            #expect(tokenizer.decode(tokenizer.encode(text)) == text)
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
