import CleaveSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where one tensor's data lies in a GGUF file, and what it holds.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in ggml order: `shape[0]` is the innermost (contiguous) one, the row length.
    public let shape: [Int]
    public let type: GGMLType
    /// Offset of the first byte from the start of the file.
    public let fileOffset: Int
    /// Bytes of data.
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of rows (all dimensions but the innermost).
    public var rowCount: Int { elementCount / max(shape.first ?? 1, 1) }
}

/// A GGUF file (versions 2 and 3, little-endian): metadata, tensor infos, and the tensor
/// data memory-mapped, never copied.
///
/// Follow the bytes: magic `GGUF`, version, tensor count, metadata count (64-bit since
/// version 2); the metadata key–value pairs; one info per tensor (name, dimensions, type,
/// offset); padding to `general.alignment` (default 32); the data section. Every count and
/// length is checked against what remains of the file before anything is allocated, so a
/// truncated or hostile file gives a ``GGUFError``, never a crash or a huge allocation.
public final class GGUFFile: Sendable {
    public let version: UInt32
    /// Metadata keys in file order.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    /// Alignment of tensor data, in bytes.
    public let alignment: Int
    /// Offset of the data section.
    public let dataOffset: Int
    /// Size of the whole file, in bytes.
    public let fileSize: Int
    private let indexByName: [String: Int]
    let bytes: MappedFile

    /// Maps the file at `path` and reads its header.
    public convenience init(contentsOf path: String) throws {
        let mapping: MappedFile
        do {
            mapping = try MappedFile(path: path)
        } catch {
            throw GGUFError.cannotOpen(path, error.reason)
        }
        guard mapping.count > 0 else { throw GGUFError.truncated("the magic number", at: 0, needed: 4, fileSize: 0) }
        try self.init(mapping: mapping)
    }

    /// Reads a GGUF image held in memory (tests and fuzzing).
    public convenience init(bytes: [UInt8]) throws {
        try self.init(mapping: MappedFile(copying: bytes))
    }

    private init(mapping: MappedFile) throws {
        bytes = mapping
        fileSize = mapping.count
        var cursor = ByteCursor(mapping.buffer)
        let magic = try cursor.bytes(4, "the magic number")
        guard magic == Array("GGUF".utf8) else { throw GGUFError.badMagic(magic) }
        let version = try cursor.read(UInt32.self, "the version")
        guard version == 2 || version == 3 else {
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw GGUFError(.unsupportedVersion, "big-endian GGUF (version \(version.byteSwapped)) is not supported")
            }
            throw GGUFError(.unsupportedVersion, "GGUF version \(version) is not supported (only 2 and 3)")
        }
        self.version = version
        let tensorCount = try cursor.count("the tensor count", minimumBytesEach: 24)
        let keyCount = try cursor.count("the metadata count", minimumBytesEach: 13)

        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for _ in 0..<keyCount {
            let key = try cursor.string("a metadata key")
            let rawType = try cursor.read(UInt32.self, "the type of '\(key)'")
            let value = try cursor.value(of: rawType, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError(.malformed, "metadata key '\(key)' appears twice")
            }
            keys.append(key)
        }
        self.keys = keys
        self.metadata = metadata

        var alignment = 32
        if let declared = metadata["general.alignment"] {
            guard case .uint32(let value) = declared, value > 0, value & (value - 1) == 0, value <= 1 << 16 else {
                throw GGUFError(.malformed, "general.alignment must be a power of two (a uint32), not \(declared.summary)")
            }
            alignment = Int(value)
        }
        self.alignment = alignment

        var infos: [(name: String, shape: [Int], type: GGMLType, offset: UInt64)] = []
        for index in 0..<tensorCount {
            let name = try cursor.string("the name of tensor \(index)")
            let rank = try cursor.read(UInt32.self, "the rank of '\(name)'")
            guard (1...4).contains(rank) else {
                throw GGUFError(.malformed, "tensor '\(name)' has \(rank) dimensions (1 to 4 allowed)")
            }
            var shape: [Int] = []
            var elements = 1
            for axis in 0..<Int(rank) {
                let size = try cursor.read(UInt64.self, "dimension \(axis) of '\(name)'")
                guard size >= 1, size <= 1 << 40 else {
                    throw GGUFError(.malformed, "tensor '\(name)' dimension \(axis) is \(size)")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(size))
                guard !overflow, product <= 1 << 40 else {
                    throw GGUFError.limitExceeded("the element count of '\(name)'", UInt64(size), limit: 1 << 40)
                }
                elements = product
                shape.append(Int(size))
            }
            let type = GGMLType(rawValue: try cursor.read(UInt32.self, "the type of '\(name)'"))
            let offset = try cursor.read(UInt64.self, "the offset of '\(name)'")
            infos.append((name, shape, type, offset))
        }
        dataOffset = (cursor.offset + alignment - 1) / alignment * alignment

        var tensors: [GGUFTensorInfo] = []
        var indexByName: [String: Int] = [:]
        for info in infos {
            guard info.type.isKnown else {
                throw GGUFError(.unknownTensorType, "tensor '\(info.name)' has unknown type \(info.type.rawValue)")
            }
            guard let byteCount = info.type.byteCount(elements: info.shape.reduce(1, *)), info.shape[0] % info.type.blockSize == 0 else {
                throw GGUFError(
                    .malformed, "tensor '\(info.name)' has rows of \(info.shape[0]) elements, not whole \(info.type) blocks of \(info.type.blockSize)"
                )
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw GGUFError(
                    .misaligned, "tensor '\(info.name)' starts at data offset \(info.offset), not a multiple of the alignment \(alignment)")
            }
            guard info.offset <= UInt64(fileSize), dataOffset + Int(info.offset) + byteCount <= fileSize else {
                throw GGUFError.truncated(
                    "the data of tensor '\(info.name)'", at: dataOffset + Int(min(info.offset, UInt64(fileSize))), needed: byteCount,
                    fileSize: fileSize)
            }
            guard indexByName.updateValue(tensors.count, forKey: info.name) == nil else {
                throw GGUFError(.malformed, "tensor '\(info.name)' appears twice")
            }
            tensors.append(
                GGUFTensorInfo(name: info.name, shape: info.shape, type: info.type, fileOffset: dataOffset + Int(info.offset), byteCount: byteCount))
        }
        self.tensors = tensors
        self.indexByName = indexByName
    }

    // MARK: - Looking things up

    /// The tensor called `name`, or nil.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        indexByName[name].map { tensors[$0] }
    }

    /// The metadata value for `key`.
    ///
    /// - Throws: ``GGUFError`` `missingKey` when the file does not have it.
    public func value(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else { throw GGUFError.missingKey(key) }
        return value
    }

    /// An integer metadata value (any integer type).
    public func integer(_ key: String) throws -> Int { try typed(key, "an integer", \.integer) }

    /// A numeric metadata value (float or integer).
    public func number(_ key: String) throws -> Double { try typed(key, "a number", \.number) }

    /// A string metadata value.
    public func string(_ key: String) throws -> String { try typed(key, "a string", \.string) }

    private func typed<T>(_ key: String, _ expected: String, _ extract: (GGUFValue) -> T?) throws -> T {
        let value = try value(key)
        guard let typed = extract(value) else {
            throw GGUFError(.wrongValueType, "metadata '\(key)' should be \(expected), it is \(value.summary)")
        }
        return typed
    }

    // MARK: - Tensor data

    /// The raw bytes of a tensor, inside the mapping (valid while this file object lives).
    func data(_ info: GGUFTensorInfo) -> UnsafeRawPointer {
        bytes.buffer.baseAddress! + info.fileOffset
    }

    /// The tensor's elements as float32, dequantized.
    ///
    /// - Throws: ``GGUFError`` `unsupportedTensorType` for a type Cleave cannot dequantize.
    public func floats(_ info: GGUFTensorInfo) throws -> [Float] {
        guard Dequantize.supports(info.type) else { throw GGUFError.unsupportedTensorType(name: info.name, type: info.type) }
        return [Float](unsafeUninitializedCapacity: info.elementCount) { buffer, initialized in
            Dequantize.row(info.type, from: data(info), count: info.elementCount, into: buffer.baseAddress!)
            initialized = info.elementCount
        }
    }
}

// MARK: - Reading primitives

/// The GGUF header's reads: ``ByteReader`` (CleaveSupport) over the mapped file, with every
/// failure turned into the ``GGUFError`` that names what was being read.
struct ByteCursor {
    private var reader: ByteReader<UnsafeRawBufferPointer>

    init(_ buffer: UnsafeRawBufferPointer) { reader = ByteReader(buffer) }

    var offset: Int { reader.offset }
    var remaining: Int { reader.remaining }
    private var fileSize: Int { reader.end }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        do { return try reader.integer(T.self) } catch { throw truncated(error, what) }
    }

    mutating func bytes(_ count: Int, _ what: String) throws -> [UInt8] {
        do { return Array(try reader.take(count)) } catch { throw truncated(error, what) }
    }

    /// A 64-bit count of items that each take at least `minimumBytesEach` bytes: it cannot exceed what is left.
    mutating func count(_ what: String, minimumBytesEach: Int) throws -> Int {
        let value = try read(UInt64.self, what)
        let possible = UInt64(remaining / minimumBytesEach)
        guard value <= possible else { throw GGUFError.limitExceeded(what, value, limit: possible) }
        return Int(value)
    }

    mutating func string(_ what: String) throws -> String {
        let length = try read(UInt64.self, "the length of \(what)")
        guard length <= UInt64(remaining) else {
            throw GGUFError.truncated(what, at: offset, needed: Int(clamping: length), fileSize: fileSize)
        }
        return String(decoding: try reader.take(Int(length)), as: UTF8.self)
    }

    private func truncated(_ error: ByteReadError, _ what: String) -> GGUFError {
        switch error {
        case .truncated(let offset, let needed, let end): GGUFError.truncated(what, at: offset, needed: needed, fileSize: end)
        case .badVarint(let offset): GGUFError(.malformed, "\(what) at byte \(offset) is malformed")
        }
    }

    /// `count` elements of `type` into one flat buffer (the count was checked against the
    /// bytes left, so the reservation is bounded by the file's size).
    mutating func array(of type: GGUFValueType, count: Int, key: String, depth: Int) throws -> GGUFArray {
        func collect<T>(_ element: (inout ByteCursor) throws -> T) throws -> [T] {
            var values: [T] = []
            values.reserveCapacity(count)
            for _ in 0..<count { values.append(try element(&self)) }
            return values
        }
        let what = "an element of '\(key)'"
        let storage: GGUFArray.Storage
        switch type {
        case .uint8: storage = .integers(try collect { Int64(try $0.read(UInt8.self, what)) })
        case .int8: storage = .integers(try collect { Int64(try $0.read(Int8.self, what)) })
        case .uint16: storage = .integers(try collect { Int64(try $0.read(UInt16.self, what)) })
        case .int16: storage = .integers(try collect { Int64(try $0.read(Int16.self, what)) })
        case .uint32: storage = .integers(try collect { Int64(try $0.read(UInt32.self, what)) })
        case .int32: storage = .integers(try collect { Int64(try $0.read(Int32.self, what)) })
        case .uint64: storage = .integers(try collect { Int64(bitPattern: try $0.read(UInt64.self, what)) })
        case .int64: storage = .integers(try collect { try $0.read(Int64.self, what) })
        case .float32: storage = .floats(try collect { Double(Float(bitPattern: try $0.read(UInt32.self, what))) })
        case .float64: storage = .floats(try collect { Double(bitPattern: try $0.read(UInt64.self, what)) })
        case .bool:
            storage = .bools(
                try collect { cursor in
                    let byte = try cursor.read(UInt8.self, what)
                    guard byte <= 1 else { throw GGUFError(.malformed, "metadata '\(key)' has a Boolean stored as \(byte)") }
                    return byte == 1
                })
        case .string: storage = .strings(try collect { try $0.string(what) })
        case .array:
            storage = .arrays(
                try collect { cursor in
                    guard case .list(let inner) = try cursor.value(of: GGUFValueType.array.rawValue, key: key, depth: depth + 1) else {
                        throw GGUFError(.malformed, "metadata '\(key)' has a nested element that is not an array")
                    }
                    return inner
                })
        }
        return GGUFArray(elementType: type, storage: storage)
    }

    mutating func value(of rawType: UInt32, key: String, depth: Int) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw GGUFError(.malformed, "metadata '\(key)' has unknown value type \(rawType)")
        }
        let what = "the value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, what))
        case .int8: return .int8(try read(Int8.self, what))
        case .uint16: return .uint16(try read(UInt16.self, what))
        case .int16: return .int16(try read(Int16.self, what))
        case .uint32: return .uint32(try read(UInt32.self, what))
        case .int32: return .int32(try read(Int32.self, what))
        case .uint64: return .uint64(try read(UInt64.self, what))
        case .int64: return .int64(try read(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, what)))
        case .bool:
            let byte = try read(UInt8.self, what)
            guard byte <= 1 else { throw GGUFError(.malformed, "metadata '\(key)' is a Boolean stored as \(byte)") }
            return .bool(byte == 1)
        case .string: return .string(try string(what))
        case .array:
            guard depth < 8 else { throw GGUFError.limitExceeded("the array nesting of '\(key)'", UInt64(depth + 1), limit: 8) }
            let elementRaw = try read(UInt32.self, "the element type of '\(key)'")
            guard let elementType = GGUFValueType(rawValue: elementRaw) else {
                throw GGUFError(.malformed, "metadata array '\(key)' has unknown element type \(elementRaw)")
            }
            let count = try self.count("the length of array '\(key)'", minimumBytesEach: elementType.minimumBytes)
            return .list(try array(of: elementType, count: count, key: key, depth: depth))
        }
    }
}
