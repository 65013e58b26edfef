/// The type tag of a GGUF metadata value.
public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// The fewest bytes one value of this type takes in a file (strings and arrays: their length fields).
    var minimumBytes: Int {
        switch self {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64, .string: 8
        case .array: 12
        }
    }
}

/// One GGUF metadata value; arrays keep their element type and may nest.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    /// An array, stored by element type in one flat buffer (``GGUFArray``), not boxed per element.
    case list(GGUFArray)

    /// An array of `type` made of `values` (each of that type).
    public static func array(_ type: GGUFValueType, _ values: [GGUFValue]) -> GGUFValue { .list(GGUFArray(type, values)) }

    /// The tag this value is written with.
    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .uint64: .uint64
        case .int64: .int64
        case .float32: .float32
        case .float64: .float64
        case .bool: .bool
        case .string: .string
        case .list: .array
        }
    }

    /// Any integer value (or a Boolean as 0/1) as `Int`, if it fits.
    public var integer: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        case .bool(let v): v ? 1 : 0
        default: nil
        }
    }

    /// A floating-point or integer value as `Double`.
    public var number: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: integer.map(Double.init)
        }
    }

    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The elements of an array value, each as a value (made on demand: prefer the typed
    /// accessors for long arrays).
    public var array: [GGUFValue]? {
        if case .list(let list) = self { return list.values }
        return nil
    }

    /// The elements of an array of strings.
    public var strings: [String]? {
        if case .list(let list) = self, case .strings(let values) = list.storage { return values }
        return nil
    }

    /// The elements of an array of numbers (integers or floats), as `Double`.
    public var numbers: [Double]? {
        guard case .list(let list) = self else { return nil }
        switch list.storage {
        case .floats(let values): return values
        case .integers(let values): return list.elementType == .uint64 ? values.map { Double(UInt64(bitPattern: $0)) } : values.map(Double.init)
        default: return nil
        }
    }

    /// The elements of an array of integers, as `Int` (nil if one does not fit).
    public var integers: [Int]? {
        guard case .list(let list) = self, case .integers(let values) = list.storage else { return nil }
        if list.elementType == .uint64, values.contains(where: { $0 < 0 }) { return nil }
        return values.map { Int($0) }
    }

    /// A short human-readable rendering (long arrays and strings are elided).
    public var summary: String {
        switch self {
        case .string(let v): v.count > 60 ? "\"\(v.prefix(57))…\" (\(v.utf8.count) bytes)" : "\"\(v)\""
        case .list(let list):
            "[\(list.elementType)] × \(list.count)"
                + (list.count == 0
                    ? "" : ": " + (0..<min(4, list.count)).map { list[$0].summary }.joined(separator: ", ") + (list.count > 4 ? ", …" : ""))
        case .bool(let v): "\(v)"
        case .float32(let v): "\(v)"
        case .float64(let v): "\(v)"
        default: "\(integer ?? 0)"
        }
    }
}

/// A metadata array in one buffer per element kind: integers (every integer type, `uint64`
/// as its bit pattern) as `Int64`, floats as `Double`, Booleans, strings, or nested arrays.
/// A tokenizer's 49,152 tokens or scores then take about their size in the file, not one
/// boxed value each.
public struct GGUFArray: Sendable, Equatable {
    public let elementType: GGUFValueType

    enum Storage: Sendable, Equatable {
        case integers([Int64]), floats([Double]), bools([Bool]), strings([String]), arrays([GGUFArray])
    }

    let storage: Storage

    init(elementType: GGUFValueType, storage: Storage) {
        self.elementType = elementType
        self.storage = storage
    }

    /// The array of `type` made of `values`; an element of another type is dropped (callers
    /// building metadata by hand give values of the array's type).
    public init(_ type: GGUFValueType, _ values: [GGUFValue]) {
        elementType = type
        switch type {
        case .float32, .float64: storage = .floats(values.compactMap(\.number))
        case .bool: storage = .bools(values.compactMap(\.bool))
        case .string: storage = .strings(values.compactMap(\.string))
        case .array: storage = .arrays(values.compactMap { if case .list(let list) = $0 { list } else { nil } })
        default:
            storage = .integers(
                values.compactMap { value in
                    if case .uint64(let v) = value { return Int64(bitPattern: v) }
                    return value.integer.map(Int64.init)
                })
        }
    }

    public var count: Int {
        switch storage {
        case .integers(let v): v.count
        case .floats(let v): v.count
        case .bools(let v): v.count
        case .strings(let v): v.count
        case .arrays(let v): v.count
        }
    }

    /// Element `index` as a value of the array's type.
    public subscript(index: Int) -> GGUFValue {
        switch storage {
        case .floats(let v): return elementType == .float32 ? .float32(Float(v[index])) : .float64(v[index])
        case .bools(let v): return .bool(v[index])
        case .strings(let v): return .string(v[index])
        case .arrays(let v): return .list(v[index])
        case .integers(let v):
            let x = v[index]
            switch elementType {
            case .uint8: return .uint8(UInt8(truncatingIfNeeded: x))
            case .int8: return .int8(Int8(truncatingIfNeeded: x))
            case .uint16: return .uint16(UInt16(truncatingIfNeeded: x))
            case .int16: return .int16(Int16(truncatingIfNeeded: x))
            case .uint32: return .uint32(UInt32(truncatingIfNeeded: x))
            case .int32: return .int32(Int32(truncatingIfNeeded: x))
            case .uint64: return .uint64(UInt64(bitPattern: x))
            default: return .int64(x)
            }
        }
    }

    /// Every element as a value.
    public var values: [GGUFValue] { (0..<count).map { self[$0] } }
}
