/// Splits text into the words that byte-level BPE then encodes one by one, the way each
/// model family's tokenizer does (GGUF key `tokenizer.ggml.pre`).
///
/// Words never cross a split: BPE merges happen only inside a word. The rules follow the
/// regular expressions of the original tokenizers as llama.cpp applies them:
/// - `gpt2`: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - `smollm` (also `starcoder`, `refact`, `command-r`, …): every number character is a
///   word of its own first, then the `gpt2` rules inside what is left.
/// - `llama-bpe` (Llama 3): case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`,
///   `\p{N}{1,3}`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
/// - `qwen2`: as `llama-bpe` with single-digit numbers.
public enum PreTokenizer: Sendable, Equatable {
    case gpt2
    case smollm
    case llama3
    case qwen2

    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, or nil when Cleave does not know it.
    public init?(ggmlName: String) {
        switch ggmlName {
        case "gpt2", "default": self = .gpt2
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva": self = .smollm
        case "llama-bpe", "llama3", "llama-v3": self = .llama3
        case "qwen2", "deepseek-r1-qwen": self = .qwen2
        default: return nil
        }
    }

    /// The words of `text`, in order; concatenated they give `text` back.
    public func words(_ text: String) -> [Substring.UnicodeScalarView] {
        let scalars = Array(text.unicodeScalars)
        var words: [Range<Int>] = []
        switch self {
        case .gpt2: Self.gpt2(scalars, 0..<scalars.count, into: &words)
        case .llama3: Self.llama3(scalars, 0..<scalars.count, digitGroup: 3, into: &words)
        case .qwen2: Self.llama3(scalars, 0..<scalars.count, digitGroup: 1, into: &words)
        case .smollm:
            // First pass: each number character alone, the stretches between them whole.
            var start = 0
            for index in scalars.indices where CharacterClass(scalars[index]).isNumber {
                if start < index { Self.gpt2(scalars, start..<index, into: &words) }
                words.append(index..<(index + 1))
                start = index + 1
            }
            if start < scalars.count { Self.gpt2(scalars, start..<scalars.count, into: &words) }
        }
        let view = Substring(text).unicodeScalars
        var result: [Substring.UnicodeScalarView] = []
        var position = view.startIndex
        var consumed = 0
        for word in words {
            let begin = view.index(position, offsetBy: word.lowerBound - consumed)
            let end = view.index(begin, offsetBy: word.count)
            result.append(view[begin..<end])
            position = end
            consumed = word.upperBound
        }
        return result
    }

    // MARK: - GPT-2 rules

    static func gpt2(_ s: [Unicode.Scalar], _ segment: Range<Int>, into words: inout [Range<Int>]) {
        let end = segment.upperBound
        func klass(_ i: Int) -> CharacterClass { i < end ? CharacterClass(s[i]) : .outside }
        var position = segment.lowerBound
        while position < end {
            let start = position
            let c = s[position]
            // 's 't 're 've 'm 'll 'd (lower case only)
            if c == "'", let length = contraction(s, at: position, end: end, caseInsensitive: false) {
                position += length
            } else {
                // An optional single space before letters, numbers or other symbols.
                let next = c == " " ? klass(position + 1) : klass(position)
                let afterSpace = position + (c == " " ? 1 : 0)
                if next.isLetter || next.isNumber || next.isOther {
                    position = afterSpace
                    while klass(position) == next { position += 1 }
                } else {
                    var run = 0
                    while klass(position + run) == .whitespace { run += 1 }
                    if run > 1 && position + run < end {
                        position += run - 1  // \s+(?!\S): leave one space for the next word
                    } else if run > 0 {
                        position += run
                    } else {
                        position += 1  // a character of no class (unassigned)
                    }
                }
            }
            words.append(start..<position)
        }
    }

    /// Length of the contraction at `i` ('s, 't, 're, 've, 'm, 'll, 'd), if there is one.
    static func contraction(_ s: [Unicode.Scalar], at i: Int, end: Int, caseInsensitive: Bool) -> Int? {
        func at(_ k: Int) -> Unicode.Scalar? {
            guard k < end else { return nil }
            let value = s[k]
            return caseInsensitive && ("A"..."Z").contains(value) ? Unicode.Scalar(value.value + 32) : value
        }
        if let next = at(i + 1), "stmd".unicodeScalars.contains(next) { return 2 }
        if let first = at(i + 1), let second = at(i + 2),
            (first == "r" && second == "e") || (first == "v" && second == "e") || (first == "l" && second == "l")
        {
            return 3
        }
        return nil
    }

    // MARK: - Llama 3 rules

    static func llama3(_ s: [Unicode.Scalar], _ segment: Range<Int>, digitGroup: Int, into words: inout [Range<Int>]) {
        let end = segment.upperBound
        func klass(_ i: Int) -> CharacterClass { i < end ? CharacterClass(s[i]) : .outside }
        func isNewline(_ i: Int) -> Bool { i < end && (s[i] == "\r" || s[i] == "\n") }
        var position = segment.lowerBound
        while position < end {
            let start = position
            let c = s[position]
            let current = klass(position)
            if c == "'", let length = contraction(s, at: position, end: end, caseInsensitive: true) {
                position += length
            } else if current.isLetter || (!isNewline(position) && !current.isNumber && klass(position + 1).isLetter) {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                position += 1
                while klass(position).isLetter { position += 1 }
            } else if current.isNumber {
                // \p{N}{1,digitGroup}
                var taken = 0
                while taken < digitGroup && klass(position).isNumber {
                    position += 1
                    taken += 1
                }
            } else if (c == " " ? klass(position + 1) : current).isOther {
                //  ?[^\s\p{L}\p{N}]+[\r\n]*
                if c == " " { position += 1 }
                while klass(position).isOther { position += 1 }
                while isNewline(position) { position += 1 }
            } else {
                var run = 0
                var lastNewline = -1
                while klass(position + run) == .whitespace {
                    if isNewline(position + run) { lastNewline = run }
                    run += 1
                }
                if lastNewline >= 0 {
                    position += lastNewline + 1  // \s*[\r\n]+
                } else if run > 1 && position + run < end {
                    position += run - 1  // \s+(?!\S)
                } else if run > 0 {
                    position += run
                } else {
                    position += 1
                }
            }
            words.append(start..<position)
        }
    }
}

/// The classes the splitting rules test: letters (`\p{L}`), numbers (`\p{N}`), white space
/// (`\s`, Unicode's White_Space property), other assigned characters, and unassigned ones.
enum CharacterClass: Equatable {
    case letter, number, whitespace, other, unassigned, outside

    init(_ scalar: Unicode.Scalar) {
        let properties = scalar.properties
        if properties.isWhitespace {
            self = .whitespace
            return
        }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: self = .letter
        case .decimalNumber, .letterNumber, .otherNumber: self = .number
        case .unassigned: self = .unassigned
        default: self = .other
        }
    }

    var isLetter: Bool { self == .letter }
    var isNumber: Bool { self == .number }
    var isOther: Bool { self == .other }
}
