import CleaveSupport

/// A GGUF file of its own for one node's slice: the blocks' tensors cut to the slice, the
/// model's hyperparameters, and `cleave.shard.*` keys that say which slice of which model
/// it is. A board gets only this, never the whole model.
///
/// Rows are cut as one byte run per tensor; columns (attention output, down projection) as
/// one run per row, on block boundaries, so nothing is requantized and a slice computes
/// exactly what the same window of the whole tensor does.
public enum ShardSliceFile {
    /// Metadata keys of a slice file.
    public enum Key {
        public static let modelSHA256 = "cleave.shard.model_sha256"
        public static let kvHeadFirst = "cleave.shard.kv_head_first"
        public static let kvHeadEnd = "cleave.shard.kv_head_end"
        public static let feedForwardFirst = "cleave.shard.ffn_first"
        public static let feedForwardEnd = "cleave.shard.ffn_end"
    }

    /// The bytes of `slice`'s file, cut from the whole model `file` whose digest is `modelSHA256`.
    public static func bytes(of slice: ShardSlice, from file: GGUFFile, modelSHA256: String) throws -> [UInt8] {
        let c = try LlamaConfiguration(file)
        var writer = GGUFWriter(alignment: file.alignment)
        let a = c.architecture
        writer.set("general.architecture", .string(a))
        for key in file.keys where key.hasPrefix("\(a).") { writer.set(key, file.metadata[key]!) }
        writer.set("\(a).vocab_size", .uint32(UInt32(c.vocabulary)))
        writer.set(Key.modelSHA256, .string(modelSHA256))
        writer.set(Key.kvHeadFirst, .uint32(UInt32(slice.kvHeads.lowerBound)))
        writer.set(Key.kvHeadEnd, .uint32(UInt32(slice.kvHeads.upperBound)))
        writer.set(Key.feedForwardFirst, .uint32(UInt32(slice.feedForward.lowerBound)))
        writer.set(Key.feedForwardEnd, .uint32(UInt32(slice.feedForward.upperBound)))

        let d = c.headDimension
        let queryRows = (slice.queryHeads(c).lowerBound * d)..<(slice.queryHeads(c).upperBound * d)
        let kvRows = (slice.kvHeads.lowerBound * d)..<(slice.kvHeads.upperBound * d)
        for layer in 0..<c.layers {
            let p = "blk.\(layer)."
            try cut(file, p + "attn_q.weight", rows: queryRows, into: &writer)
            try cut(file, p + "attn_k.weight", rows: kvRows, into: &writer)
            try cut(file, p + "attn_v.weight", rows: kvRows, into: &writer)
            if c.attentionBias {
                try cut(file, p + "attn_q.bias", rows: queryRows, into: &writer)
                try cut(file, p + "attn_k.bias", rows: kvRows, into: &writer)
                try cut(file, p + "attn_v.bias", rows: kvRows, into: &writer)
            }
            try cut(file, p + "attn_output.weight", columns: queryRows, into: &writer)
            try cut(file, p + "ffn_gate.weight", rows: slice.feedForward, into: &writer)
            try cut(file, p + "ffn_up.weight", rows: slice.feedForward, into: &writer)
            try cut(file, p + "ffn_down.weight", columns: slice.feedForward, into: &writer)
        }
        return writer.bytes()
    }

    /// The slice a slice file holds, and the digest of the model it was cut from.
    public static func describe(_ file: GGUFFile) throws -> (slice: ShardSlice, modelSHA256: String) {
        func bound(_ key: String) throws -> Int {
            guard let value = file.metadata[key]?.integer else {
                throw GGUFError(.missingKey, "'\(key)' is missing: this is not a Cleave shard slice (cut with `cleave llm shard-plan --write`)")
            }
            return value
        }
        let (kvFirst, kvEnd) = (try bound(Key.kvHeadFirst), try bound(Key.kvHeadEnd))
        let (ffFirst, ffEnd) = (try bound(Key.feedForwardFirst), try bound(Key.feedForwardEnd))
        guard kvFirst <= kvEnd, ffFirst <= ffEnd else {
            throw GGUFError(.malformed, "slice bounds kv \(kvFirst)..<\(kvEnd), ffn \(ffFirst)..<\(ffEnd) are reversed")
        }
        return (ShardSlice(kvHeads: kvFirst..<kvEnd, feedForward: ffFirst..<ffEnd), try file.string(Key.modelSHA256))
    }

    /// Rows `rows` of a matrix (or elements of a vector): one byte run.
    private static func cut(_ file: GGUFFile, _ name: String, rows: Range<Int>, into writer: inout GGUFWriter) throws {
        let info = try tensor(file, name)
        let rowCount = info.shape.count == 1 ? info.shape[0] : info.rowCount
        let rowBytes = info.byteCount / max(1, rowCount)
        guard rows.upperBound <= rowCount, info.shape.count == 1 || info.shape.count == 2 else {
            throw GGUFError(.malformed, "tensor '\(name)' has \(rowCount) rows; the slice needs \(rows)")
        }
        let data = UnsafeRawBufferPointer(start: file.data(info) + rows.lowerBound * rowBytes, count: rows.count * rowBytes)
        let shape = info.shape.count == 1 ? [rows.count] : [info.shape[0], rows.count]
        writer.addTensor(name, shape: shape, type: info.type, data: Array(data))
    }

    /// Columns `columns` of every row of a matrix: one byte run per row, on block boundaries.
    private static func cut(_ file: GGUFFile, _ name: String, columns: Range<Int>, into writer: inout GGUFWriter) throws {
        let info = try tensor(file, name)
        guard info.shape.count == 2, columns.upperBound <= info.shape[0], let skip = info.type.byteCount(elements: columns.lowerBound),
            let width = info.type.byteCount(elements: columns.count)
        else { throw GGUFError(.malformed, "tensor '\(name)' \(info.shape) cannot be cut to columns \(columns) on \(info.type) blocks") }
        let rowBytes = info.byteCount / info.rowCount
        let base = file.data(info)
        var data: [UInt8] = []
        data.reserveCapacity(width * info.rowCount)
        for row in 0..<info.rowCount {
            data += UnsafeRawBufferPointer(start: base + row * rowBytes + skip, count: width)
        }
        writer.addTensor(name, shape: [columns.count, info.shape[1]], type: info.type, data: data)
    }

    private static func tensor(_ file: GGUFFile, _ name: String) throws -> GGUFTensorInfo {
        guard let info = file.tensor(named: name) else { throw GGUFError(.missingTensor, "the model has no tensor '\(name)'") }
        return info
    }

    /// SHA-256 of a whole mapped file, in place.
    public static func digest(of file: GGUFFile) -> String {
        var hasher = SHA256()
        hasher.update(file.bytes.buffer)
        return SHA256.hexString(hasher.finish())
    }
}
