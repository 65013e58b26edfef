import Testing

@testable import CleaveLLM

/// Truncated, hostile and mutated files give typed errors, never a crash or a huge allocation.
@Suite struct GGUFBadInputTests {
    static let sample = GGUFTests.sampleFile().bytes

    func kind(of bytes: [UInt8]) -> GGUFError.Kind? {
        do {
            _ = try GGUFFile(bytes: bytes)
            return nil
        } catch let error as GGUFError {
            return error.kind
        } catch {
            Issue.record("unexpected error type: \(error)")
            return nil
        }
    }

    /// Writes a little-endian integer over `bytes` at `offset`.
    func patch<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, _ value: T) -> [UInt8] {
        var copy = bytes
        withUnsafeBytes(of: value.littleEndian) { for (index, byte) in $0.enumerated() { copy[offset + index] = byte } }
        return copy
    }

    @Test func everyTruncationIsRefused() {
        var kinds: Set<String> = []
        for length in stride(from: 0, to: Self.sample.count, by: max(1, Self.sample.count / 3000)) {
            let result = kind(of: Array(Self.sample.prefix(length)))
            #expect(result != nil, "a \(length)-byte prefix was accepted")
            kinds.insert("\(result.map { "\($0)" } ?? "nil")")
        }
        #expect(kinds.contains("truncated"))
    }

    @Test func headerProblemsHaveTheirOwnErrors() throws {
        #expect(kind(of: Array("GGUX".utf8) + Array(Self.sample.dropFirst(4))) == .badMagic)
        #expect(kind(of: patch(Self.sample, at: 4, UInt32(1))) == .unsupportedVersion)
        #expect(kind(of: patch(Self.sample, at: 4, UInt32(3).byteSwapped)) == .unsupportedVersion)
        #expect(kind(of: patch(Self.sample, at: 8, UInt64(1) << 60)) == .limitExceeded)
        #expect(kind(of: patch(Self.sample, at: 16, UInt64.max)) == .limitExceeded)
        let error = try #require(throws: GGUFError.self) { try GGUFFile(bytes: Array("GGUX".utf8) + [3, 0, 0, 0]) }
        #expect(error.description == "not a GGUF file: it starts with \"GGUX\", not \"GGUF\"")
    }

    @Test func tensorInfoProblemsAreNamed() throws {
        func file(_ configure: (inout GGUFWriter) -> Void) -> [UInt8] {
            var writer = GGUFWriter()
            writer.set("general.architecture", .string("llama"))
            configure(&writer)
            return writer.bytes()
        }
        /// Offset of the info of the only tensor, named "w": name (8 + 1 bytes), rank (4), one dimension (8), type (4), offset (8).
        func nameField(_ bytes: [UInt8]) throws -> Int {
            let pattern: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "w"), 1, 0, 0, 0]
            return try #require((0..<(bytes.count - pattern.count)).last { Array(bytes[$0..<($0 + pattern.count)]) == pattern })
        }
        let one = file { $0.addTensor("w", shape: [32], type: .q8_0, data: [UInt8](repeating: 0, count: 34)) }
        let name = try nameField(one)
        let (rankField, typeField, offsetField) = (name + 9, name + 21, name + 25)
        #expect(kind(of: one) == nil)
        #expect(kind(of: patch(one, at: offsetField, UInt64(4))) == .misaligned)
        #expect(kind(of: patch(one, at: offsetField, UInt64(1 << 20))) == .truncated)
        #expect(kind(of: patch(one, at: typeField, UInt32(99))) == .unknownTensorType)
        #expect(kind(of: patch(one, at: rankField, UInt32(5))) == .malformed)
        #expect(kind(of: patch(one, at: rankField + 4, UInt64(0))) == .malformed)
        // 48 floats are not whole Q8_0 blocks of 32.
        let rows = file { $0.addTensor("w", shape: [48], type: .f32, data: [UInt8](repeating: 0, count: 192)) }
        #expect(kind(of: patch(rows, at: try nameField(rows) + 21, UInt32(8))) == .malformed)
        let duplicate = file {
            $0.addTensor("w", shape: [32], type: .f32, data: [UInt8](repeating: 0, count: 128))
            $0.addTensor("w", shape: [32], type: .f32, data: [UInt8](repeating: 0, count: 128))
        }
        #expect(kind(of: duplicate) == .malformed)
    }

    /// 100,000 mutated headers: each parses or gives a GGUFError; what parses also dequantizes.
    @Test func mutatedHeadersNeverCrash() throws {
        let sample = Self.sample
        let file = try GGUFFile(bytes: sample)
        let headerEnd = file.dataOffset
        var random = SeededValues(state: 42)
        var accepted = 0
        var refused = 0
        for round in 0..<100_000 {
            var bytes = sample
            switch round % 4 {
            case 0, 1:
                // Flip 1–4 random bytes of the header.
                for _ in 0...(random.next() % 4) { bytes[Int(random.next() % UInt64(headerEnd))] ^= UInt8(truncatingIfNeeded: random.next() | 1) }
            case 2:
                // Overwrite a random 8-byte window with a large or small count.
                let at = Int(random.next() % UInt64(headerEnd - 8))
                let value: UInt64 = random.next() % 2 == 0 ? random.next() : random.next() % 64
                withUnsafeBytes(of: value.littleEndian) { for (index, byte) in $0.enumerated() { bytes[at + index] = byte } }
            default:
                // Cut the file short somewhere in the header, or drop a byte from it.
                let at = Int(random.next() % UInt64(headerEnd))
                if random.next() % 2 == 0 { bytes = Array(bytes.prefix(at)) } else { bytes.remove(at: at) }
            }
            do {
                let parsed = try GGUFFile(bytes: bytes)
                for info in parsed.tensors where Dequantize.supports(info.type) { _ = try parsed.floats(info) }
                accepted += 1
            } catch is GGUFError {
                refused += 1
            }
        }
        #expect(accepted + refused == 100_000)
        #expect(refused > 25_000, "mutations should mostly be caught: \(refused) refused")
    }

    /// 100,000 mutations of a file whose metadata is a tokenizer's tables (tokens, scores,
    /// types, special ids, merges-like strings, a nested array): each parses or gives a
    /// GGUFError, and what parses builds a tokenizer (or refuses with an error) that encodes
    /// and decodes without trapping.
    @Test func mutatedTokenizerTablesNeverCrash() throws {
        let sample = SentencePieceTests.vocabularyFile()
        let headerEnd = min(try GGUFFile(bytes: sample).dataOffset, sample.count)
        var random = SeededValues(state: 7)
        var parsed = 0
        var tokenizers = 0
        for round in 0..<100_000 {
            var bytes = sample
            switch round % 3 {
            case 0:
                for _ in 0...(random.next() % 4) { bytes[Int(random.next() % UInt64(headerEnd))] ^= UInt8(truncatingIfNeeded: random.next() | 1) }
            case 1:
                // A length, count or id overwritten with a huge or a small value.
                let at = Int(random.next() % UInt64(headerEnd - 8))
                let value: UInt64 = random.next() % 2 == 0 ? random.next() : random.next() % 300
                withUnsafeBytes(of: value.littleEndian) { for (index, byte) in $0.enumerated() { bytes[at + index] = byte } }
            default:
                let at = Int(random.next() % UInt64(headerEnd))
                bytes = Array(bytes.prefix(at))
            }
            guard let file = try? GGUFFile(bytes: bytes) else { continue }
            parsed += 1
            guard let tokenizer = try? Tokenizer(file) else { continue }
            tokenizers += 1
            let ids = tokenizer.encode("hello world ünïcode 12")
            _ = tokenizer.decode(ids + [Int32.max, -1, 0])
        }
        #expect(parsed > 0 && tokenizers > 0, "some mutations leave a usable file: \(parsed) parsed, \(tokenizers) tokenizers")
    }

    /// Metadata arrays take about their size in the file, not a boxed value per element: a
    /// tokenizer-sized table (65,536 tokens, scores and types) held in memory in at most 4×
    /// its bytes (by the arrays' element sizes; strings of up to 15 bytes are held inline).
    @Test func metadataArraysAreCompact() throws {
        var writer = GGUFWriter()
        let count = 65_536
        writer.set("t.tokens", .array(.string, (0..<count).map { .string("t\($0 % 5000)") }))
        writer.set("t.scores", .array(.float32, (0..<count).map { .float32(Float($0)) }))
        writer.set("t.types", .array(.int32, (0..<count).map { .int32(Int32($0 % 7)) }))
        let bytes = writer.bytes()
        let file = try GGUFFile(bytes: bytes)
        var held = 0
        for key in ["t.tokens", "t.scores", "t.types"] {
            guard case .list(let list) = try file.value(key) else { Issue.record("\(key) is not an array"); continue }
            switch list.storage {
            case .strings(let values):
                held += values.count * MemoryLayout<String>.stride + values.reduce(0) { $0 + ($1.utf8.count > 15 ? $1.utf8.count + 32 : 0) }
            case .floats(let values): held += values.count * MemoryLayout<Double>.stride
            case .integers(let values): held += values.count * MemoryLayout<Int64>.stride
            default: Issue.record("\(key) has an unexpected storage")
            }
        }
        #expect(held < 4 * bytes.count, "metadata held in \(held) bytes for a \(bytes.count)-byte file")
        #expect(try file.value("t.tokens").strings?[4999] == "t4999" && file.value("t.scores").numbers?[9] == 9)
        #expect(try file.value("t.types").integers?.prefix(3) == [0, 1, 2])
    }
}
