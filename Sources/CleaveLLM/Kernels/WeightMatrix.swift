import CleaveTensor

/// A weight matrix read in place from a GGUF file: `rows` outputs × `columns` inputs,
/// each row a run of ggml blocks.
///
/// GGUF stores a linear layer's weight with shape `[columns, rows]` (innermost
/// first), which is exactly "one contiguous quantized row per output", so a
/// product is one fused dot per row and no weight is ever copied or dequantized
/// ahead of time.
struct WeightMatrix {
    let name: String
    let type: GGMLType
    let rows: Int
    let columns: Int
    /// Bytes from one row to the next (a whole row of the stored tensor).
    let rowStride: Int
    private let base: UnsafeRawPointer

    /// Looks `name` up in `file` and checks that it is a `rows × columns` matrix of a computable type.
    ///
    /// With `rowWindow` and `columnWindow`, only that block of the matrix is used, read in
    /// place (a tensor-parallel slice taken from the whole model); a column window must start
    /// and end on the type's block boundaries.
    init(
        _ file: GGUFFile, _ name: String, rows: Int, columns: Int, rowWindow: Range<Int>? = nil, columnWindow: Range<Int>? = nil
    ) throws {
        guard let info = file.tensor(named: name) else {
            throw GGUFError(.missingTensor, "the model has no tensor '\(name)'")
        }
        guard info.shape == [columns, rows] else {
            throw GGUFError(
                .malformed,
                "tensor '\(name)' has shape [\(info.shape.map(String.init).joined(separator: ", "))], expected [\(columns), \(rows)]")
        }
        guard Dequantize.supports(info.type) else { throw GGUFError.unsupportedTensorType(name: name, type: info.type) }
        let rowWindow = rowWindow ?? 0..<rows
        let columnWindow = columnWindow ?? 0..<columns
        guard rowWindow.lowerBound >= 0, rowWindow.upperBound <= rows, columnWindow.lowerBound >= 0, columnWindow.upperBound <= columns,
            let skipped = info.type.byteCount(elements: columnWindow.lowerBound), info.type.byteCount(elements: columnWindow.count) != nil
        else {
            throw GGUFError(
                .malformed, "tensor '\(name)': rows \(rowWindow), columns \(columnWindow) is not a block-aligned part of \(rows) × \(columns)")
        }
        guard !QuantizedDot.hasIntegerKernel(info.type) || columnWindow.count % 32 == 0 else {
            throw GGUFError(.malformed, "tensor '\(name)' has \(columnWindow.count) columns, not a multiple of 32")
        }
        self.name = name
        type = info.type
        self.rows = rowWindow.count
        self.columns = columnWindow.count
        rowStride = info.byteCount / rows
        base = file.data(info) + rowWindow.lowerBound * rowStride + skipped
    }

    /// The start of row `index`.
    func row(_ index: Int) -> UnsafeRawPointer { base + index * rowStride }

    /// Row `index` as float32 (an embedding lookup).
    func dequantizeRow(_ index: Int, into y: UnsafeMutablePointer<Float>) {
        Dequantize.row(type, from: row(index), count: columns, into: y)
    }

    /// `out[t · rows + r] = Σ_c W[r, c] · x[t, c]` for every token `t` of `x`.
    ///
    /// Rows are split across the pool's threads; each thread streams its rows once and
    /// multiplies every row with all tokens while it is in cache (four tokens per pass
    /// of the integer kernels).
    /// With `precision` `.float` every row is dequantized and multiplied in float32 instead.
    func multiply(
        _ x: Activations, into out: UnsafeMutablePointer<Float>, workers: WorkerTeam, precision: ActivationPrecision = .q8
    ) {
        precondition(x.columns == columns, "\(name): input has \(x.columns) columns, the matrix \(columns)")
        let tokens = x.tokens
        if precision == .q8 && QuantizedDot.hasIntegerKernel(type) {
            x.quantize(workers: workers)
            workers.parallelFor(rows, dynamicChunk: tokens > 1 ? 16 : max(16, rows / (4 * workers.threads))) { range in
                for r in range {
                    QuantizedDot.row(type, row(r), x, first: 0, tokens: tokens, out + r, stride: rows)
                }
            }
        } else {
            workers.parallelFor(rows, dynamicChunk: 32) { range in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: columns)
                defer { scratch.deallocate() }
                for r in range {
                    QuantizedDot.dequantizedDot(type, row(r), x, first: 0, tokens: tokens, out + r, stride: rows, scratch: scratch)
                }
            }
        }
    }
}

/// How the inputs of matrix products are represented.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// Quantized to 8 bits per block of 32 (ggml's `Q8_0`/`Q8_1`), multiplied with integer
    /// kernels: llama.cpp's arithmetic, and the fast path.
    case q8
    /// Kept in float32; weights are dequantized row by row. Slower; the products are then
    /// exact up to float32 rounding, which makes this the mode to check a model against a
    /// high-precision reference.
    case float
}
