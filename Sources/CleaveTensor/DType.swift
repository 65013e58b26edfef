/// The element type of a ``Tensor``.
///
/// Cleave computes in `float32`; the integer types exist for shapes, indices and
/// quantized activations, and `bool` for masks.
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case float32
    case float64
    case int8
    case uint8
    case int16
    case uint16
    case int32
    case int64
    case bool

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .int8, .uint8, .bool: 1
        case .int16, .uint16: 2
        case .float32, .int32: 4
        case .float64, .int64: 8
        }
    }

    /// Whether the type is a floating-point type.
    public var isFloatingPoint: Bool { self == .float32 || self == .float64 }

    public var description: String { rawValue }
}

/// A Swift scalar type that can live in a ``Tensor``.
public protocol TensorScalar: Numeric, Comparable, Sendable {
    /// The ``DType`` that stores this Swift type.
    static var dtype: DType { get }
    /// Converts from a `Double`, rounding toward zero and wrapping like a C cast for integers.
    init(fromDouble value: Double)
    /// The value as a `Double`.
    var doubleValue: Double { get }
}

extension Float: TensorScalar {
    public static var dtype: DType { .float32 }
    public init(fromDouble value: Double) { self = Float(value) }
    public var doubleValue: Double { Double(self) }
}

extension Double: TensorScalar {
    public static var dtype: DType { .float64 }
    public init(fromDouble value: Double) { self = value }
    public var doubleValue: Double { self }
}

extension Int8: TensorScalar {
    public static var dtype: DType { .int8 }
    public init(fromDouble value: Double) { self = Int8(truncatingIfNeeded: Int64(clampingForCast: value)) }
    public var doubleValue: Double { Double(self) }
}

extension UInt8: TensorScalar {
    public static var dtype: DType { .uint8 }
    public init(fromDouble value: Double) { self = UInt8(truncatingIfNeeded: Int64(clampingForCast: value)) }
    public var doubleValue: Double { Double(self) }
}

extension Int16: TensorScalar {
    public static var dtype: DType { .int16 }
    public init(fromDouble value: Double) { self = Int16(truncatingIfNeeded: Int64(clampingForCast: value)) }
    public var doubleValue: Double { Double(self) }
}

extension UInt16: TensorScalar {
    public static var dtype: DType { .uint16 }
    public init(fromDouble value: Double) { self = UInt16(truncatingIfNeeded: Int64(clampingForCast: value)) }
    public var doubleValue: Double { Double(self) }
}

extension Int32: TensorScalar {
    public static var dtype: DType { .int32 }
    public init(fromDouble value: Double) { self = Int32(truncatingIfNeeded: Int64(clampingForCast: value)) }
    public var doubleValue: Double { Double(self) }
}

extension Int64: TensorScalar {
    public static var dtype: DType { .int64 }
    public init(fromDouble value: Double) { self = Int64(clampingForCast: value) }
    public var doubleValue: Double { Double(self) }

    /// Converts a `Double` without trapping: NaN becomes 0, out-of-range values saturate.
    init(clampingForCast value: Double) {
        if value.isNaN {
            self = 0
        } else if value >= 9.2e18 {
            self = .max
        } else if value <= -9.2e18 {
            self = .min
        } else {
            self = Int64(value)
        }
    }
}
