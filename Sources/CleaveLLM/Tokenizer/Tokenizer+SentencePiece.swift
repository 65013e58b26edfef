/// SentencePiece segmentation (`tokenizer.ggml.model = llama`, Llama 1/2, Mistral, TinyLlama).
///
/// Spaces become `▁` (U+2581); the text is split into characters; the adjacent pair
/// whose concatenation is a vocabulary piece with the highest score is merged (the
/// leftmost on a tie) until no pair is a piece. A character that is not a piece is
/// written as its UTF-8 bytes, one `<0xXX>` token each (the unknown token when the
/// vocabulary has no byte tokens).
extension Tokenizer {
    init(sentencePiece file: GGUFFile) throws {
        guard let tokens = try file.value("tokenizer.ggml.tokens").strings, !tokens.isEmpty else {
            throw GGUFError(.wrongValueType, "tokenizer.ggml.tokens should be a non-empty array of strings")
        }
        guard let scores = try file.value("tokenizer.ggml.scores").numbers, scores.count == tokens.count else {
            throw GGUFError(.wrongValueType, "tokenizer.ggml.scores should hold one number per token (\(tokens.count))")
        }
        let types = (file.metadata["tokenizer.ggml.token_type"]?.integers?.map { Int32(truncatingIfNeeded: $0) }) ?? []
        try self.init(
            algorithm: .sentencePiece(addSpacePrefix: file.metadata["tokenizer.ggml.add_space_prefix"]?.bool ?? true),
            tokens: tokens, types: types.count == tokens.count ? types : [Int32](repeating: 1, count: tokens.count), merges: [],
            scores: scores.map { Float($0) }, preTokenizer: .gpt2,
            bos: file.metadata["tokenizer.ggml.bos_token_id"]?.integer.flatMap { Int32(exactly: $0) },
            eos: file.metadata["tokenizer.ggml.eos_token_id"]?.integer.flatMap { Int32(exactly: $0) },
            unknown: file.metadata["tokenizer.ggml.unknown_token_id"]?.integer.flatMap { Int32(exactly: $0) },
            addsBOS: file.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? true)
    }

    /// Appends the pieces of `text` (one stretch between special tokens).
    func encodePieces(_ text: String, into out: inout [Int32]) {
        var symbols = text.unicodeScalars.map { $0 == " " ? "\u{2581}" : String($0) }
        while symbols.count > 1 {
            var best: (score: Float, index: Int)?
            for index in 0..<(symbols.count - 1) {
                guard let id = ids[symbols[index] + symbols[index + 1]] else { continue }
                if best == nil || scores[Int(id)] > best!.score { best = (scores[Int(id)], index) }
            }
            guard let best else { break }
            symbols[best.index] += symbols[best.index + 1]
            symbols.remove(at: best.index + 1)
        }
        for symbol in symbols {
            if let id = ids[symbol] {
                out.append(id)
                continue
            }
            for byte in symbol.utf8 {
                if let id = ids[Self.byteTokenText(byte)] {
                    out.append(id)
                } else if let id = ids[String(UnicodeScalar(byte))], byte < 0x80 {
                    out.append(id)
                } else if let unknown {
                    out.append(unknown)
                }
            }
        }
    }

    /// `<0x0A>` for byte 10.
    static func byteTokenText(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return "<0x\(digits[Int(byte >> 4)])\(digits[Int(byte & 15)])>"
    }

    /// The bytes a SentencePiece token stands for: its byte for `<0xXX>`, else its text with `▁` as a space.
    static func pieceBytes(_ text: String, isByte: Bool) -> [UInt8] {
        if isByte || (text.utf8.count == 6 && text.hasPrefix("<0x") && text.hasSuffix(">")) {
            if let value = UInt8(text.dropFirst(3).dropLast(), radix: 16) { return [value] }
        }
        return Array(text.replacing("\u{2581}", with: " ").utf8)
    }
}
