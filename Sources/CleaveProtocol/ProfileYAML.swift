/// The YAML that device profiles are written in: one flat mapping of fields, each a scalar
/// (plain, 'single' or "double" quoted) or a list of scalars (`[a, b]` on the line, or `- a`
/// lines below the key), with `#` comments.
///
/// Profiles are read on the board by the lean agent, which links no YAML library (Yams needs
/// all of Foundation). Anything beyond this subset — nested mappings, anchors, tags, block
/// scalars, several documents — is refused with its line rather than misread.
struct ProfileYAML {
    enum Value: Equatable {
        case scalar(String)
        case list([String])
    }

    struct Field {
        let key: String
        let value: Value
        /// 1-based line of the key.
        let line: Int
    }

    /// The fields in file order; keys are unique.
    let fields: [Field]

    init(_ text: String, source: String) throws(ProfileError) {
        var fields: [Field] = []
        var openList: (key: String, line: Int, items: [String])?
        func fail(_ line: Int, _ reason: String) -> ProfileError { ProfileError(description: "\(source): line \(line): \(reason)") }
        func close() {
            guard let list = openList else { return }
            fields.append(Field(key: list.key, value: .list(list.items), line: list.line))
            openList = nil
        }
        // "\r\n" is one Character in Swift, so both line ends are separators.
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
        for (index, rawLine) in lines.enumerated() {
            let number = index + 1
            let line = Self.stripComment(Substring(rawLine.filter { $0 != "\r" }))
            let content = line.drop { $0 == " " }
            if content.isEmpty { continue }
            guard !line.hasPrefix("\t"), !content.hasPrefix("\t") else { throw fail(number, "tabs cannot indent YAML; use spaces") }
            if content == "---" && fields.isEmpty && openList == nil { continue }
            if content.hasPrefix("- ") || content == "-" {
                guard openList != nil else { throw fail(number, "a list item '\(content)' without a field above it") }
                openList!.items.append(try Self.scalar(content.dropFirst().drop { $0 == " " }, line: number, fail: fail))
                continue
            }
            close()
            guard content.count == line.count else {
                throw fail(number, "indented '\(content)': a profile is one flat mapping of fields (nested mappings are not supported)")
            }
            guard let colon = Self.keySeparator(in: content) else {
                throw fail(number, "expected 'field: value', got '\(content)'")
            }
            let key = String(content[..<colon]).trimmingSpaces()
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                throw fail(number, "'\(key)' is not a field name (letters, digits, '_' and '-')")
            }
            if let earlier = fields.first(where: { $0.key == key }) {
                throw fail(number, "field '\(key)' given twice (first on line \(earlier.line))")
            }
            let rest = content[content.index(after: colon)...].drop { $0 == " " }
            if rest.isEmpty {
                openList = (key, number, [])
            } else if rest.hasPrefix("[") {
                fields.append(Field(key: key, value: .list(try Self.flowList(rest, line: number, fail: fail)), line: number))
            } else {
                fields.append(Field(key: key, value: .scalar(try Self.scalar(rest, line: number, fail: fail)), line: number))
            }
        }
        close()
        self.fields = fields
    }

    /// The line without its comment: `#` at the start or after a space, outside quotes.
    private static func stripComment(_ line: Substring) -> Substring {
        for index in unquotedIndices(line) where line[index] == "#" && (index == line.startIndex || line[line.index(before: index)] == " ") {
            return line[..<index].trimmingTrailingSpaces()
        }
        return line.trimmingTrailingSpaces()
    }

    /// Positions of the characters outside '…' and "…" quotes (the quote marks left out).
    private static func unquotedIndices(_ text: Substring) -> [Substring.Index] {
        var quote: Character?
        var indices: [Substring.Index] = []
        for index in text.indices {
            let character = text[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else {
                indices.append(index)
            }
        }
        return indices
    }

    /// The `:` that ends the key: the first one followed by a space or the end, outside quotes.
    private static func keySeparator(in content: Substring) -> Substring.Index? {
        var index = content.startIndex
        while index < content.endIndex {
            if content[index] == "\"" || content[index] == "'" { return nil }
            let next = content.index(after: index)
            if content[index] == ":" && (next == content.endIndex || content[next] == " ") { return index }
            index = next
        }
        return nil
    }

    /// One scalar: quoted (with `\"`, `\\`, `\n` and `\t` in double quotes, `''` in single)
    /// or plain.
    private static func scalar(_ text: Substring, line: Int, fail: (Int, String) -> ProfileError) throws(ProfileError) -> String {
        guard let first = text.first else { return "" }
        if first == "\"" || first == "'" {
            var result = ""
            var index = text.index(after: text.startIndex)
            while index < text.endIndex {
                let character = text[index]
                if character == first {
                    let next = text.index(after: index)
                    if first == "'" && next < text.endIndex && text[next] == "'" {
                        result.append("'")
                        index = text.index(after: next)
                        continue
                    }
                    guard text[next...].allSatisfy({ $0 == " " }) else {
                        throw fail(line, "text after the closing quote: '\(text[next...])'")
                    }
                    return result
                }
                if first == "\"" && character == "\\" {
                    index = text.index(after: index)
                    guard index < text.endIndex else { break }
                    switch text[index] {
                    case "n": result.append("\n")
                    case "t": result.append("\t")
                    case "\"", "\\", "/": result.append(text[index])
                    default: throw fail(line, "unsupported escape '\\\(text[index])' in a quoted value")
                    }
                } else {
                    result.append(character)
                }
                index = text.index(after: index)
            }
            throw fail(line, "a quoted value is not closed on its line (multi-line values are not supported)")
        }
        if let indicator = "&*!|>{%@`".first(where: { $0 == first }) {
            throw fail(line, "'\(indicator)' starts YAML that profiles do not support (anchors, tags, block scalars, flow mappings); quote the value")
        }
        return String(text)
    }

    /// `[a, "b", c]` on one line.
    private static func flowList(_ text: Substring, line: Int, fail: (Int, String) -> ProfileError) throws(ProfileError) -> [String] {
        guard text.last == "]" else { throw fail(line, "a list opened with '[' must close with ']' on the same line") }
        let inner = text.dropFirst().dropLast()
        if inner.allSatisfy({ $0 == " " }) { return [] }
        var items: [Substring] = []
        var start = inner.startIndex
        for index in unquotedIndices(inner) {
            if inner[index] == "[" || inner[index] == "]" { throw fail(line, "nested lists are not supported") }
            if inner[index] == "," {
                items.append(inner[start..<index])
                start = inner.index(after: index)
            }
        }
        items.append(inner[start...])
        var values: [String] = []
        for item in items {
            let trimmed = item.drop { $0 == " " }.trimmingTrailingSpaces()
            guard !trimmed.isEmpty else { throw fail(line, "an empty item in the list '\(text)'") }
            values.append(try scalar(trimmed, line: line, fail: fail))
        }
        return values
    }
}

extension Substring {
    fileprivate func trimmingTrailingSpaces() -> Substring {
        var end = endIndex
        while end > startIndex, self[index(before: end)] == " " { end = index(before: end) }
        return self[startIndex..<end]
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String { String(Substring(self).drop { $0 == " " }.trimmingTrailingSpaces()) }
}
