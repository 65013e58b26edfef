import CleaveSupport
import CleaveTensor
import FoundationEssentials
import SwiftProtobuf

/// Reads and writes single tensors: NumPy `.npy` files and ONNX `TensorProto` `.pb` files.
public enum TensorFile {
    /// Reads a tensor from `path`, by extension: `.npy` or `.pb`. Returns the name stored in the
    /// file (`.pb` only; may be empty) and the tensor.
    public static func read(_ path: String) throws -> (name: String, tensor: Tensor) {
        let data: Data
        do {
            data = Data(try SystemCall.readFile(path))
        } catch {
            throw ONNXError.unreadableFile(path, reason: error.reason)
        }
        if path.hasSuffix(".npy") { return ("", try NPY.decode(data, source: path)) }
        let proto: Onnx_TensorProto
        do {
            proto = try Onnx_TensorProto(serializedBytes: data)
        } catch {
            throw ONNXError.notAModel(path, reason: "not a TensorProto (\(error))")
        }
        return (proto.name, try Tensor(proto: proto, directory: URL(fileURLWithPath: path).deletingLastPathComponent()))
    }

    /// Writes `tensor` to `path` as `.npy` (version 1.0, little-endian, C order).
    public static func writeNPY(_ tensor: Tensor, to path: String) throws {
        do {
            try SystemCall.writeFileAtomically(path, [UInt8](NPY.encode(tensor)))
        } catch {
            throw ONNXError.unreadableFile(path, reason: "cannot write: \(error.reason)")
        }
    }
}

/// The NumPy `.npy` format, version 1.0–3.0, for the element types Cleave has.
enum NPY {
    static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)

    static func descriptor(_ dtype: DType) -> String {
        switch dtype {
        case .float32: "<f4"
        case .float64: "<f8"
        case .int8: "|i1"
        case .uint8: "|u1"
        case .int16: "<i2"
        case .uint16: "<u2"
        case .int32: "<i4"
        case .int64: "<i8"
        case .bool: "|b1"
        }
    }

    static func encode(_ tensor: Tensor) -> Data {
        let shape = tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descriptor(tensor.dtype))', 'fortran_order': False, 'shape': \(shape), }"
        let unpadded = magic.count + 2 + 2 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data(magic + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: tensor.bytes())
        return data
    }

    static func decode(_ data: Data, source: String) throws -> Tensor {
        let bytes = [UInt8](data)
        func fail(_ reason: String) -> ONNXError { .notAModel(source, reason: "not a valid .npy file: \(reason)") }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("bad magic") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default: throw fail("unsupported version \(major)")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("truncated header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard let descr = field("descr", in: header),
            let dtype = DType.allCases.first(where: {
                descriptor($0) == descr || descriptor($0).dropFirst() == descr.dropFirst() && descr.first != ">"
            })
        else {
            throw fail("unsupported dtype in header \(header)")
        }
        guard !header.contains("'fortran_order': True") else { throw fail("Fortran order is not supported") }
        guard let open = header.firstRange(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw fail("no shape in header")
        }
        let shape = try header[open.upperBound..<close].split(separator: ",").map { part -> Int in
            guard let value = Int(part.filter { $0 != " " }), value >= 0 else { throw fail("bad shape \(header)") }
            return value
        }
        let payload = bytes[(headerStart + headerLength)...]
        // The header's numbers are untrusted: a product that overflows is an error, not a trap.
        guard let count = shape.checkedProduct(), let needed = [count, dtype.byteSize].checkedProduct() else {
            throw fail("shape \(shape) has more elements than memory can hold")
        }
        guard payload.count == needed else {
            throw fail("has \(payload.count) data bytes, shape \(shape) of \(dtype) needs \(needed)")
        }
        return Tensor(shape: shape, dtype: dtype, bytes: payload)
    }

    private static func field(_ key: String, in header: String) -> String? {
        guard let start = header.firstRange(of: "'\(key)': '") else { return nil }
        guard let end = header[start.upperBound...].firstIndex(of: "'") else { return nil }
        return String(header[start.upperBound..<end])
    }
}
