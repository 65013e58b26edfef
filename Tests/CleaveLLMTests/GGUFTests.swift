import CleaveSupport
import Testing

@testable import CleaveLLM

/// Deterministic values for fixtures.
struct SeededValues {
    var generator: SeededGenerator
    init(state: UInt64) { generator = SeededGenerator(seed: state) }
    mutating func next() -> UInt64 { generator.next() }
    /// Uniform in −1…1, times a per-call spread so that blocks differ in range.
    mutating func float(scale: Float = 1) -> Float { (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
    mutating func floats(_ count: Int) -> [Float] {
        (0..<count).map { index in
            // Vary the magnitude every 16 values and add an offset every 256, like real weights' rows.
            let spread = Float(1 + (index / 16) % 5) * 0.3
            return float(scale: spread) + Float((index / 256) % 3) * 0.05
        }
    }
}

@Suite struct GGUFTests {
    /// A small file with every metadata type, nested arrays and one tensor per computable type.
    static func sampleFile(alignment: Int = 32) -> (bytes: [UInt8], values: [String: [Float]]) {
        var writer = GGUFWriter(alignment: alignment)
        writer.set("general.architecture", .string("llama"))
        writer.set("test.u8", .uint8(200))
        writer.set("test.i8", .int8(-100))
        writer.set("test.u16", .uint16(60000))
        writer.set("test.i16", .int16(-30000))
        writer.set("test.u32", .uint32(4_000_000_000))
        writer.set("test.i32", .int32(-2_000_000_000))
        writer.set("test.u64", .uint64(1 << 60))
        writer.set("test.i64", .int64(-(1 << 60)))
        writer.set("test.f32", .float32(0.25))
        writer.set("test.f64", .float64(-1e-300))
        writer.set("test.bool", .bool(true))
        writer.set("test.string", .string("héllo 🦙"))
        writer.set("test.strings", .array(.string, [.string("a"), .string(""), .string("ü")]))
        writer.set("test.nested", .array(.array, [.array(.int32, [.int32(1), .int32(-2)]), .array(.int32, [])]))
        var random = SeededValues(state: 7)
        var values: [String: [Float]] = [:]
        for type in GGMLType.computable {
            let name = "t.\(type)"
            let shape = [512, 3]
            let data = random.floats(512 * 3)
            writer.addTensor(name, shape: shape, type: type, values: data)
            values[name] = data
        }
        return (writer.bytes(), values)
    }

    @Test(arguments: [32, 64])
    func writerAndReaderRoundTrip(alignment: Int) throws {
        let (bytes, values) = Self.sampleFile(alignment: alignment)
        let file = try GGUFFile(bytes: bytes)
        #expect(file.version == 3)
        #expect(file.alignment == alignment)
        #expect(file.metadata["test.u8"] == .uint8(200))
        #expect(file.metadata["test.i64"] == .int64(-(1 << 60)))
        #expect(file.metadata["test.f64"] == .float64(-1e-300))
        #expect(try file.string("test.string") == "héllo 🦙")
        #expect(file.metadata["test.strings"]?.array?.compactMap(\.string) == ["a", "", "ü"])
        #expect(file.metadata["test.nested"] == .array(.array, [.array(.int32, [.int32(1), .int32(-2)]), .array(.int32, [])]))
        #expect(file.keys.first == "general.architecture")
        #expect(file.tensors.count == GGMLType.computable.count)
        for info in file.tensors {
            #expect(info.fileOffset % alignment == 0, "\(info.name)")
            #expect(info.shape == [512, 3])
            #expect(try file.floats(info).count == values[info.name]?.count)
        }
        #expect(throws: GGUFError.missingKey("nope")) { try file.integer("nope") }
    }

    /// Each type's dequantized values stay within its format's error of the float original.
    @Test(arguments: GGMLType.computable)
    func dequantizationIsWithinTheFormatError(type: GGMLType) throws {
        var random = SeededValues(state: UInt64(type.rawValue) + 100)
        let original = random.floats(4096)
        var writer = GGUFWriter()
        writer.addTensor("w", shape: [1024, 4], type: type, values: original)
        let file = try GGUFFile(bytes: writer.bytes())
        let restored = try file.floats(try #require(file.tensor(named: "w")))
        var worstRatio: Float = 0
        for start in stride(from: 0, to: original.count, by: 256) {
            // Bounds per 256 values, from each format's step: half a step plus the scale's float16 rounding.
            let block = original[start..<(start + 256)]
            let amax = block.map(abs).max()!
            let bound: Float
            switch type {
            case .f32: bound = 0
            case .f16: bound = amax * 0x1p-11
            case .bf16: bound = amax * 0x1p-8
            case .q8_0: bound = 0.5 * amax / 127 * 1.01
            case .q4_0: bound = 0.5 * amax / 7 * 1.01
            case .q4_1: bound = 0.5 * 2 * amax / 15 * 1.01 + amax * 0x1p-10
            case .q4_K: bound = 0.5 * (2 * amax / 15) * 1.1
            case .q6_K: bound = 0.5 * amax / 31 * 1.1
            default: Issue.record("no bound for \(type)"); return
            }
            for index in block.indices {
                let error = abs(restored[index] - original[index])
                #expect(error <= bound, "\(type) element \(index): \(original[index]) → \(restored[index])")
                if bound > 0 { worstRatio = max(worstRatio, error / bound) }
            }
        }
        // The check is live: quantized types really lose precision, close to their bound.
        if type != .f32 { #expect(worstRatio > 0.2, "\(type) worst error / bound \(worstRatio)") }
    }

    /// Hand-made blocks decode to the values ggml's layouts define.
    @Test func knownBlocksDecode() throws {
        // Q8_0: d = 0.5 (f16 0x3800), q = 0, 1, …, 31 → 0, 0.5, …
        let q8: [UInt8] = [0x00, 0x38] + (0..<32).map { UInt8($0) }
        var writer = GGUFWriter()
        writer.addTensor("q8", shape: [32], type: .q8_0, data: q8)
        // Q4_1: d = 1, m = −2; byte j holds q = j (low) and 15 − j (high).
        let q41: [UInt8] = [0x00, 0x3C, 0x00, 0xC0] + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        writer.addTensor("q41", shape: [32], type: .q4_1, data: q41)
        let file = try GGUFFile(bytes: writer.bytes())
        #expect(try file.floats(file.tensor(named: "q8")!) == (0..<32).map { Float($0) * 0.5 })
        #expect(try file.floats(file.tensor(named: "q41")!) == (0..<16).map { Float($0) - 2 } + (0..<16).map { Float(15 - $0) - 2 })
    }

    @Test func unsupportedTypesAreNamed() throws {
        var writer = GGUFWriter()
        writer.addTensor("blk.0.attn_q.weight", shape: [32], type: .q5_0, data: [UInt8](repeating: 0, count: 22))
        let file = try GGUFFile(bytes: writer.bytes())
        let error = try #require(throws: GGUFError.self) { try file.floats(file.tensors[0]) }
        #expect(error.kind == .unsupportedTensorType)
        #expect(error.description.contains("'blk.0.attn_q.weight'") && error.description.contains("Q5_0"))
    }
}
