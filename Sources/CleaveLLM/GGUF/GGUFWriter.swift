/// Builds a GGUF version 3 file in memory: metadata in insertion order, then tensors.
///
/// Tests use it to make tiny random models; it writes exactly the layout ``GGUFFile``
/// reads (little-endian, 64-bit counts, data aligned to `alignment`).
public struct GGUFWriter {
    private var metadata: [(String, GGUFValue)] = []
    private var tensors: [(name: String, shape: [Int], type: GGMLType, data: [UInt8])] = []
    /// Alignment of tensor data in bytes (written as `general.alignment` when not 32).
    public var alignment: Int

    public init(alignment: Int = 32) {
        self.alignment = alignment
    }

    /// Adds a metadata key (keys keep the order they were added in).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        metadata.removeAll { $0.0 == key }
        metadata.append((key, value))
    }

    /// Adds a tensor already encoded as `type` (`shape` in ggml order, innermost first).
    public mutating func addTensor(_ name: String, shape: [Int], type: GGMLType, data: [UInt8]) {
        precondition(type.byteCount(elements: shape.reduce(1, *)) == data.count, "\(name): \(data.count) bytes for \(shape) of \(type)")
        tensors.append((name, shape, type, data))
    }

    /// Adds a tensor from float32 values, quantized to `type`.
    public mutating func addTensor(_ name: String, shape: [Int], type: GGMLType, values: [Float]) {
        addTensor(name, shape: shape, type: type, data: Quantize.blocks(type, values: values))
    }

    /// The file's bytes.
    public func bytes() -> [UInt8] {
        var entries = metadata
        if alignment != 32 && !entries.contains(where: { $0.0 == "general.alignment" }) {
            entries.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        var out: [UInt8] = Array("GGUF".utf8)
        Quantize.append(&out, UInt32(3))
        Quantize.append(&out, UInt64(tensors.count))
        Quantize.append(&out, UInt64(entries.count))
        for (key, value) in entries {
            Self.write(string: key, to: &out)
            Quantize.append(&out, value.type.rawValue)
            Self.write(value, to: &out)
        }
        var offset = 0
        var offsets: [Int] = []
        for tensor in tensors {
            offsets.append(offset)
            offset += (tensor.data.count + alignment - 1) / alignment * alignment
        }
        for (tensor, offset) in zip(tensors, offsets) {
            Self.write(string: tensor.name, to: &out)
            Quantize.append(&out, UInt32(tensor.shape.count))
            for size in tensor.shape { Quantize.append(&out, UInt64(size)) }
            Quantize.append(&out, tensor.type.rawValue)
            Quantize.append(&out, UInt64(offset))
        }
        let dataStart = (out.count + alignment - 1) / alignment * alignment
        for (tensor, offset) in zip(tensors, offsets) {
            out.append(contentsOf: [UInt8](repeating: 0, count: dataStart + offset - out.count))
            out.append(contentsOf: tensor.data)
        }
        return out
    }

    static func write(string: String, to out: inout [UInt8]) {
        Quantize.append(&out, UInt64(string.utf8.count))
        out.append(contentsOf: string.utf8)
    }

    static func write(_ value: GGUFValue, to out: inout [UInt8]) {
        switch value {
        case .uint8(let v): out.append(v)
        case .int8(let v): out.append(UInt8(bitPattern: v))
        case .uint16(let v): Quantize.append(&out, v)
        case .int16(let v): Quantize.append(&out, v)
        case .uint32(let v): Quantize.append(&out, v)
        case .int32(let v): Quantize.append(&out, v)
        case .uint64(let v): Quantize.append(&out, v)
        case .int64(let v): Quantize.append(&out, v)
        case .float32(let v): Quantize.append(&out, v.bitPattern)
        case .float64(let v): Quantize.append(&out, v.bitPattern)
        case .bool(let v): out.append(v ? 1 : 0)
        case .string(let v): write(string: v, to: &out)
        case .list(let list):
            Quantize.append(&out, list.elementType.rawValue)
            Quantize.append(&out, UInt64(list.count))
            for index in 0..<list.count { write(list[index], to: &out) }
        }
    }
}
