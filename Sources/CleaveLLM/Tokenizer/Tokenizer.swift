/// Text to token ids and back, built from a GGUF file's `tokenizer.ggml.*` metadata.
///
/// Byte-level BPE (`tokenizer.ggml.model = gpt2`): special tokens (control and
/// user-defined) are cut out of the text first; every other stretch is split into words by
/// the model's ``PreTokenizer``; each word's UTF-8 bytes become one symbol per byte (in
/// GPT-2's printable byte alphabet) and the adjacent pair with the best (lowest) merge
/// rank is merged until no listed merge applies; each symbol is then a token.
///
/// SentencePiece (`tokenizer.ggml.model = llama`): see `Tokenizer+SentencePiece.swift`.
public struct Tokenizer: Sendable {
    /// How text is segmented into tokens.
    public enum Algorithm: Sendable, Equatable {
        /// Byte-level BPE with merge ranks, after splitting text into words.
        case bytePairs
        /// SentencePiece: characters merged by score, bytes as `<0xXX>` tokens when a character
        /// is not in the vocabulary; spaces are `▁`, and with `addSpacePrefix` a space is put
        /// before the text (and after every special token).
        case sentencePiece(addSpacePrefix: Bool)
    }

    public let algorithm: Algorithm
    /// Token texts by id (byte-level BPE texts use GPT-2's byte alphabet, `Ġ` for a space).
    public let tokens: [String]
    /// ggml token types by id: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    public let types: [Int32]
    public let preTokenizer: PreTokenizer
    public let bos: Int32?
    public let eos: Int32?
    /// Whether encoding starts with the BOS token (`tokenizer.ggml.add_bos_token`).
    public let addsBOS: Bool
    let ids: [String: Int32]
    private let mergeRanks: [String: Int]
    /// Special tokens, longest first (matched in that order).
    private let specials: [(text: String, id: Int32)]
    /// SentencePiece scores by id (higher merges first).
    let scores: [Float]
    let unknown: Int32?

    /// The tokenizer a GGUF file describes.
    ///
    /// - Throws: ``GGUFError`` for a missing key, a tokenizer model other than byte-level BPE
    ///   (`gpt2`) or SentencePiece (`llama`), or a pre-tokenizer Cleave does not know.
    public init(_ file: GGUFFile) throws {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" || model == "llama" else {
            throw GGUFError(
                .unsupportedArchitecture,
                "tokenizer model '\(model)' is not supported (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)")
        }
        if model == "llama" {
            try self.init(sentencePiece: file)
            return
        }
        let pre = (try? file.string("tokenizer.ggml.pre")) ?? "default"
        guard let preTokenizer = PreTokenizer(ggmlName: pre) else {
            throw GGUFError(.unsupportedArchitecture, "pre-tokenizer '\(pre)' is not supported (known: gpt2, smollm, llama-bpe, qwen2)")
        }
        guard let tokens = try file.value("tokenizer.ggml.tokens").strings, !tokens.isEmpty else {
            throw GGUFError(.wrongValueType, "tokenizer.ggml.tokens should be a non-empty array of strings")
        }
        let types = (file.metadata["tokenizer.ggml.token_type"]?.integers?.map { Int32(truncatingIfNeeded: $0) }) ?? []
        let merges = try file.value("tokenizer.ggml.merges").strings ?? []
        try self.init(
            tokens: tokens, types: types.count == tokens.count ? types : [Int32](repeating: 1, count: tokens.count), merges: merges,
            preTokenizer: preTokenizer, bos: file.metadata["tokenizer.ggml.bos_token_id"]?.integer.flatMap { Int32(exactly: $0) },
            eos: file.metadata["tokenizer.ggml.eos_token_id"]?.integer.flatMap { Int32(exactly: $0) },
            addsBOS: file.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false)
    }

    /// A tokenizer from its parts (merges as `"left right"`, the GGUF form).
    public init(
        tokens: [String], types: [Int32], merges: [String], preTokenizer: PreTokenizer, bos: Int32? = nil, eos: Int32? = nil,
        addsBOS: Bool = false
    ) throws {
        try self.init(
            algorithm: .bytePairs, tokens: tokens, types: types, merges: merges, scores: [], preTokenizer: preTokenizer, bos: bos,
            eos: eos, unknown: nil, addsBOS: addsBOS)
    }

    init(
        algorithm: Algorithm, tokens: [String], types: [Int32], merges: [String], scores: [Float], preTokenizer: PreTokenizer,
        bos: Int32?, eos: Int32?, unknown: Int32?, addsBOS: Bool
    ) throws {
        self.algorithm = algorithm
        self.scores = scores
        self.unknown = unknown
        self.tokens = tokens
        self.types = types
        self.preTokenizer = preTokenizer
        self.bos = bos
        self.eos = eos
        self.addsBOS = addsBOS
        var ids: [String: Int32] = [:]
        for (id, text) in tokens.enumerated() where ids[text] == nil { ids[text] = Int32(id) }
        self.ids = ids
        var ranks: [String: Int] = [:]
        for (rank, merge) in merges.enumerated() where ranks[merge] == nil { ranks[merge] = rank }
        mergeRanks = ranks
        // Control (3) and user-defined (4) tokens, longest first. A loop, not a chain of closures:
        // the chain once made the type checker give up ("unable to type-check … in reasonable time").
        var found: [(text: String, id: Int32)] = []
        for (id, text) in tokens.enumerated() where id < types.count && (types[id] == 3 || types[id] == 4) && !text.isEmpty {
            found.append((text: text, id: Int32(id)))
        }
        found.sort { $0.text.utf8.count > $1.text.utf8.count }
        specials = found
        for id in [bos, eos, unknown].compactMap({ $0 }) where Int(id) >= tokens.count || id < 0 {
            throw GGUFError(.malformed, "special token id \(id) is outside the vocabulary of \(tokens.count)")
        }
    }

    // MARK: - Encoding

    /// The token ids of `text`; with `parseSpecial`, special-token texts (`<|im_start|>`) become their ids.
    public func encode(_ text: String, parseSpecial: Bool = true, addBOS: Bool? = nil) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? addsBOS, let bos { out.append(bos) }
        var afterSpecial = true
        for fragment in parseSpecial ? splitSpecials(text) : [.text(text)] {
            switch fragment {
            case .special(let id):
                out.append(id)
                afterSpecial = true
            case .text(let stretch):
                switch algorithm {
                case .bytePairs:
                    for word in preTokenizer.words(stretch) { encodeWord(word, into: &out) }
                case .sentencePiece(let addSpacePrefix):
                    encodePieces((addSpacePrefix && afterSpecial ? " " : "") + stretch, into: &out)
                }
                afterSpecial = false
            }
        }
        return out
    }

    private enum Fragment {
        case text(String)
        case special(Int32)
    }

    private func splitSpecials(_ text: String) -> [Fragment] {
        var fragments: [Fragment] = [.text(text)]
        for special in specials {
            var next: [Fragment] = []
            for fragment in fragments {
                guard case .text(let stretch) = fragment, stretch.contains(special.text) else {
                    next.append(fragment)
                    continue
                }
                var rest = Substring(stretch)
                while let found = rest.firstRange(of: special.text) {
                    if found.lowerBound > rest.startIndex { next.append(.text(String(rest[..<found.lowerBound]))) }
                    next.append(.special(special.id))
                    rest = rest[found.upperBound...]
                }
                if !rest.isEmpty { next.append(.text(String(rest))) }
            }
            fragments = next
        }
        return fragments
    }

    private func encodeWord(_ word: Substring.UnicodeScalarView, into out: inout [Int32]) {
        var symbols = String(word).utf8.map { String(ByteAlphabet.scalar(for: $0)) }
        // Merge the best-ranked adjacent pair (leftmost on ties) until none is listed.
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)?
            for index in 0..<(symbols.count - 1) {
                if let rank = mergeRanks[symbols[index] + " " + symbols[index + 1]], rank < (best?.rank ?? .max) {
                    best = (rank, index)
                }
            }
            guard let best else { break }
            symbols[best.index] += symbols[best.index + 1]
            symbols.remove(at: best.index + 1)
        }
        for symbol in symbols {
            if let id = ids[symbol] {
                out.append(id)
            } else {
                // Not in the vocabulary as a whole: its single-byte symbols are.
                for scalar in symbol.unicodeScalars { if let id = ids[String(scalar)] { out.append(id) } }
            }
        }
    }

    // MARK: - Decoding

    /// The UTF-8 bytes of `ids` (special tokens as their text).
    public func decodeBytes(_ ids: [Int32]) -> [UInt8] {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            let text = tokens[Int(id)]
            if types[Int(id)] == 3 || types[Int(id)] == 4 {
                bytes.append(contentsOf: text.utf8)
                continue
            }
            if case .sentencePiece = algorithm {
                bytes += Self.pieceBytes(text, isByte: types[Int(id)] == 6)
                continue
            }
            for scalar in text.unicodeScalars {
                if let byte = ByteAlphabet.byte(for: scalar) { bytes.append(byte) } else { bytes.append(contentsOf: String(scalar).utf8) }
            }
        }
        return bytes
    }

    /// The text of `ids` (invalid UTF-8, e.g. half a character at the end, becomes U+FFFD).
    public func decode(_ ids: [Int32]) -> String {
        String(decoding: decodeBytes(ids), as: UTF8.self)
    }
}

/// GPT-2's reversible map between bytes and printable characters: printable Latin-1
/// bytes stand for themselves, the other 68 bytes take the characters from U+0100 on.
enum ByteAlphabet {
    private static let table: [Unicode.Scalar] = {
        var printable = Set<UInt8>(33...126)
        printable.formUnion(161...172)
        printable.formUnion(174...255)
        var next: UInt32 = 256
        return (0...255).map { (byte: Int) -> Unicode.Scalar in
            if printable.contains(UInt8(byte)) { return Unicode.Scalar(UInt8(byte)) }
            defer { next += 1 }
            return Unicode.Scalar(next)!
        }
    }()
    private static let inverse: [UInt32: UInt8] = Dictionary(uniqueKeysWithValues: table.enumerated().map { ($1.value, UInt8($0)) })

    static func scalar(for byte: UInt8) -> Unicode.Scalar { table[Int(byte)] }
    static func byte(for scalar: Unicode.Scalar) -> UInt8? { inverse[scalar.value] }
}
