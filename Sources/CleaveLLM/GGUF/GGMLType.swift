/// A ggml tensor element type, as stored in GGUF tensor infos.
///
/// Quantized types pack `blockSize` elements into `blockBytes` bytes; a tensor's
/// innermost dimension is a whole number of blocks. The table below lists every
/// type whose block layout the reader knows (so that it can check a file's
/// extents); ``computable`` are the ones Cleave dequantizes and multiplies.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    public static let q4_0 = GGMLType(rawValue: 2)
    public static let q4_1 = GGMLType(rawValue: 3)
    public static let q5_0 = GGMLType(rawValue: 6)
    public static let q5_1 = GGMLType(rawValue: 7)
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let q8_1 = GGMLType(rawValue: 9)
    public static let q2_K = GGMLType(rawValue: 10)
    public static let q3_K = GGMLType(rawValue: 11)
    public static let q4_K = GGMLType(rawValue: 12)
    public static let q5_K = GGMLType(rawValue: 13)
    public static let q6_K = GGMLType(rawValue: 14)
    public static let q8_K = GGMLType(rawValue: 15)
    public static let i8 = GGMLType(rawValue: 24)
    public static let i16 = GGMLType(rawValue: 25)
    public static let i32 = GGMLType(rawValue: 26)
    public static let i64 = GGMLType(rawValue: 27)
    public static let f64 = GGMLType(rawValue: 28)
    public static let bf16 = GGMLType(rawValue: 30)

    /// Types Cleave can dequantize and compute with.
    public static let computable: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q4_K, .q6_K]

    /// (name, elements per block, bytes per block) for every known type.
    private static let layouts: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 30: ("BF16", 1, 2),
    ]

    /// Whether the reader knows this type's block layout.
    public var isKnown: Bool { Self.layouts[rawValue] != nil }
    /// Elements per block (1 for plain types).
    public var blockSize: Int { Self.layouts[rawValue]?.1 ?? 0 }
    /// Bytes per block.
    public var blockBytes: Int { Self.layouts[rawValue]?.2 ?? 0 }
    /// The name llama.cpp uses (`Q4_K`), or `type N` for an unknown one.
    public var description: String { Self.layouts[rawValue]?.0 ?? "type \(rawValue)" }

    /// Bytes that `elements` elements take, or nil when they are not a whole number of blocks.
    public func byteCount(elements: Int) -> Int? {
        guard isKnown, elements % blockSize == 0 else { return nil }
        return elements / blockSize * blockBytes
    }
}
