import CleaveSupport
import CleaveTensor
import FoundationEssentials

// MARK: - ONNX element types

extension DType {
    /// The `TensorProto.DataType` number ONNX uses for this type.
    public var onnxCode: Int {
        switch self {
        case .float32: 1
        case .uint8: 2
        case .int8: 3
        case .uint16: 4
        case .int16: 5
        case .int32: 6
        case .int64: 7
        case .bool: 9
        case .float64: 11
        }
    }

    /// The type for an ONNX `TensorProto.DataType` number, or `nil` when Cleave does not support it.
    public init?(onnxCode: Int) {
        guard let match = DType.allCases.first(where: { $0.onnxCode == onnxCode }) else { return nil }
        self = match
    }
}

/// ONNX's names for element types, for error messages.
func onnxTypeName(_ code: Int) -> String {
    Onnx_TensorProto.DataType(rawValue: code).map { "\($0)".uppercased() } ?? "type \(code)"
}

// MARK: - Decoding

/// Upper bound on one tensor's size, in bytes; larger claims are refused before allocating.
let maximumTensorBytes = 1 << 34

/// The largest window, stride, dilation, pad or resized extent a model may ask for (far above
/// any real one): with it, shape arithmetic on untrusted attributes cannot overflow.
let maximumAttributeExtent = 1 << 31

extension Tensor {
    /// Decodes an ONNX `TensorProto`; external data is read relative to `directory`.
    init(proto: Onnx_TensorProto, directory: URL?) throws {
        let name = proto.name
        guard let dtype = DType(onnxCode: Int(proto.dataType)) else {
            throw ONNXError.unsupportedTensor(name, "element type \(onnxTypeName(Int(proto.dataType))) is not supported")
        }
        let shape = proto.dims.map { Int($0) }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw ONNXError.unsupportedTensor(name, "negative dimension in \(shape)")
        }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow, product * dtype.byteSize <= maximumTensorBytes else {
                throw ONNXError.unsupportedTensor(name, "shape \(shape) is too large")
            }
            count = product
        }
        if proto.dataLocation == .external {
            let bytes = try Self.externalBytes(proto, directory: directory, expected: count * dtype.byteSize)
            self.init(shape: shape, dtype: dtype, bytes: bytes)
            return
        }
        if proto.hasRawData {
            guard proto.rawData.count == count * dtype.byteSize else {
                throw ONNXError.unsupportedTensor(
                    name, "raw data has \(proto.rawData.count) bytes, shape \(shape) of \(dtype) needs \(count * dtype.byteSize)")
            }
            self.init(shape: shape, dtype: dtype, bytes: proto.rawData)
            return
        }
        func check(_ available: Int) throws {
            guard available == count else {
                throw ONNXError.unsupportedTensor(name, "has \(available) values, shape \(shape) needs \(count)")
            }
        }
        switch dtype {
        case .float32:
            try check(proto.floatData.count)
            self.init(shape: shape, scalars: proto.floatData)
        case .float64:
            try check(proto.doubleData.count)
            self.init(shape: shape, scalars: proto.doubleData)
        case .int64:
            try check(proto.int64Data.count)
            self.init(shape: shape, scalars: proto.int64Data)
        case .int32:
            try check(proto.int32Data.count)
            self.init(shape: shape, scalars: proto.int32Data)
        case .int8:
            try check(proto.int32Data.count)
            self.init(shape: shape, scalars: proto.int32Data.map { Int8(truncatingIfNeeded: $0) })
        case .uint8:
            try check(proto.int32Data.count)
            self.init(shape: shape, scalars: proto.int32Data.map { UInt8(truncatingIfNeeded: $0) })
        case .int16:
            try check(proto.int32Data.count)
            self.init(shape: shape, scalars: proto.int32Data.map { Int16(truncatingIfNeeded: $0) })
        case .uint16:
            try check(proto.int32Data.count)
            self.init(shape: shape, scalars: proto.int32Data.map { UInt16(truncatingIfNeeded: $0) })
        case .bool:
            try check(proto.int32Data.count)
            self.init(shape: shape, booleans: proto.int32Data.map { $0 != 0 })
        }
    }

    private static func externalBytes(_ proto: Onnx_TensorProto, directory: URL?, expected: Int) throws -> Data {
        let entries = Dictionary(proto.externalData.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        guard let location = entries["location"], !location.isEmpty else {
            throw ONNXError.unsupportedTensor(proto.name, "external data has no location")
        }
        guard let directory else {
            throw ONNXError.unsupportedTensor(proto.name, "external data '\(location)' needs the model's folder")
        }
        let file = directory.appendingPathComponent(location).standardizedFileURL
        guard file.path.hasPrefix(directory.standardizedFileURL.path + "/") else {
            throw ONNXError.unsupportedTensor(proto.name, "external data path '\(location)' leaves the model's folder")
        }
        let offset = Int(entries["offset"] ?? "0") ?? -1
        let length = entries["length"].map { Int($0) ?? -1 } ?? expected
        guard offset >= 0, length == expected else {
            throw ONNXError.unsupportedTensor(
                proto.name, "external data offset \(entries["offset"] ?? "0") / length \(length) do not fit \(expected) bytes")
        }
        let mapped: MappedFile
        do {
            mapped = try MappedFile(path: file.path)
        } catch {
            throw ONNXError.unsupportedTensor(proto.name, "external data file \(file.path) cannot be opened: \(error.reason)")
        }
        guard offset <= mapped.count, length <= mapped.count - offset else {
            throw ONNXError.unsupportedTensor(
                proto.name, "external data file \(location) ends after \(max(0, mapped.count - offset)) of \(length) bytes at offset \(offset)")
        }
        return Data(mapped.buffer[offset..<(offset + length)])
    }
}

// MARK: - Encoding

extension Onnx_TensorProto {
    /// A `TensorProto` holding `tensor` as raw little-endian data.
    init(_ tensor: Tensor, name: String) {
        self.init()
        self.name = name
        dims = tensor.shape.map { Int64($0) }
        dataType = Int32(tensor.dtype.onnxCode)
        rawData = Data(tensor.bytes())
    }
}
