/// Operators that move elements without arithmetic: transpose, concat, gather, pad.
///
/// They work on any element type by moving fixed-size words (1, 2, 4 or 8 bytes).
public enum Layout {
    /// Writes `input` with its axes permuted by `permutation` into `output`.
    public static func transpose(_ input: Tensor, permutation: [Int], into output: Tensor) {
        withWord(input.dtype) { word in transpose(word, input, permutation, output) }
    }

    private static func transpose<W>(_ word: W.Type, _ input: Tensor, _ permutation: [Int], _ output: Tensor) {
        let rank = input.rank
        let source = input.pointer(as: W.self)
        let destination = output.pointer(as: W.self)
        guard rank > 0 else {
            destination[0] = source[0]
            return
        }
        var inputStrides = [Int](repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) { inputStrides[axis] = inputStrides[axis + 1] * input.shape[axis + 1] }
        let outShape = permutation.map { input.shape[$0] }
        let strides = permutation.map { inputStrides[$0] }
        let inner = outShape[rank - 1]
        let innerStride = strides[rank - 1]
        guard inner > 0 else { return }
        let rows = output.count / inner
        var counter = [Int](repeating: 0, count: rank)
        var offset = 0
        for row in 0..<rows {
            let out = destination + row * inner
            for index in 0..<inner { out[index] = source[offset + index * innerStride] }
            var axis = rank - 2
            while axis >= 0 {
                counter[axis] += 1
                offset += strides[axis]
                if counter[axis] < outShape[axis] { break }
                offset -= strides[axis] * outShape[axis]
                counter[axis] = 0
                axis -= 1
            }
        }
    }

    /// Concatenates `inputs` along `axis` into `output`.
    public static func concat(_ inputs: [Tensor], axis: Int, into output: Tensor) {
        let elementSize = output.dtype.byteSize
        let outer = output.shape[..<axis].reduce(1, *)
        let outRow = output.shape[axis...].reduce(1, *) * elementSize
        var columnOffset = 0
        for input in inputs {
            let row = input.shape[axis...].reduce(1, *) * elementSize
            for index in 0..<outer {
                (output.rawPointer + index * outRow + columnOffset)
                    .copyMemory(from: input.rawPointer + index * row, byteCount: row)
            }
            columnOffset += row
        }
    }

    /// Copies a `size.rows × size.columns` window of every plane of `source` `[…, H, W]`, whose
    /// top-left corner is `from`, into `destination` `[…, H′, W′]` at `to` (the leading
    /// dimensions of both must agree): how patch-based execution cuts a patch's input out of
    /// an image and pastes the patch's output into the stage's tensor.
    public static func copyWindow(
        of source: Tensor, from: (row: Int, column: Int), into destination: Tensor, at to: (row: Int, column: Int),
        size: (rows: Int, columns: Int)
    ) {
        precondition(source.rank >= 2 && destination.rank == source.rank && source.dtype == destination.dtype)
        let (height, width) = (source.shape[source.rank - 2], source.shape[source.rank - 1])
        let (targetHeight, targetWidth) = (destination.shape[destination.rank - 2], destination.shape[destination.rank - 1])
        let planes = source.shape.dropLast(2).reduce(1, *)
        precondition(planes == destination.shape.dropLast(2).reduce(1, *), "leading dimensions differ")
        precondition(from.row >= 0 && from.column >= 0 && from.row + size.rows <= height && from.column + size.columns <= width)
        precondition(to.row >= 0 && to.column >= 0 && to.row + size.rows <= targetHeight && to.column + size.columns <= targetWidth)
        let element = source.dtype.byteSize
        let rowBytes = size.columns * element
        for plane in 0..<planes {
            let sourcePlane = source.rawPointer + plane * height * width * element
            let targetPlane = destination.rawPointer + plane * targetHeight * targetWidth * element
            for row in 0..<size.rows {
                (targetPlane + ((to.row + row) * targetWidth + to.column) * element)
                    .copyMemory(from: sourcePlane + ((from.row + row) * width + from.column) * element, byteCount: rowBytes)
            }
        }
    }

    /// Gathers slices of `data` along `axis` at `indices` (negative indices count from the end).
    ///
    /// - Throws: ``TensorError`` when an index is outside `[-n, n)`.
    public static func gather(_ data: Tensor, indices: [Int], axis: Int, into output: Tensor) throws {
        let elementSize = data.dtype.byteSize
        let outer = data.shape[..<axis].reduce(1, *)
        let length = data.shape[axis]
        let inner = data.shape[(axis + 1)...].reduce(1, *) * elementSize
        for (position, index) in indices.enumerated() where index < -length || index >= length {
            throw TensorError("Gather index \(index) at position \(position) is outside [-\(length), \(length))")
        }
        var destination = output.rawPointer
        for block in 0..<outer {
            for index in indices {
                let resolved = index < 0 ? index + length : index
                destination.copyMemory(from: data.rawPointer + (block * length + resolved) * inner, byteCount: inner)
                destination += inner
            }
        }
    }

    /// How ``pad(_:begin:mode:constant:into:)`` fills the border.
    public enum PadMode: String, Sendable {
        case constant, reflect, edge, wrap
    }

    /// Pads (or, with negative amounts, crops) every axis of `input` into `output`, whose shape
    /// sets the amount after each axis; `begin` is the amount before.
    ///
    /// `constant` is the fill value in the tensor's element type, as raw bytes.
    public static func pad(_ input: Tensor, begin: [Int], mode: PadMode, constant: [UInt8], into output: Tensor) {
        withWord(input.dtype) { word in pad(word, input, begin, mode, constant, output) }
    }

    private static func pad<W: FixedWidthInteger>(
        _ word: W.Type, _ input: Tensor, _ begin: [Int], _ mode: PadMode, _ constant: [UInt8], _ output: Tensor
    ) {
        let rank = input.rank
        let source = input.pointer(as: W.self)
        let destination = output.pointer(as: W.self)
        let fill: W = constant.withUnsafeBytes { raw in
            raw.count >= MemoryLayout<W>.size ? raw.loadUnaligned(as: W.self) : .zero
        }
        var inputStrides = [Int](repeating: 1, count: rank)
        if rank > 1 {
            for axis in stride(from: rank - 2, through: 0, by: -1) { inputStrides[axis] = inputStrides[axis + 1] * input.shape[axis + 1] }
        }
        var counter = [Int](repeating: 0, count: rank)
        for position in 0..<output.count {
            var offset = 0
            var outside = false
            for axis in 0..<rank {
                let size = input.shape[axis]
                var index = counter[axis] - begin[axis]
                if index < 0 || index >= size {
                    switch mode {
                    case .constant: outside = true
                    case .edge: index = min(max(index, 0), size - 1)
                    case .wrap: index = ((index % size) + size) % size
                    case .reflect:
                        if size == 1 {
                            index = 0
                        } else {
                            let period = 2 * (size - 1)
                            index = ((index % period) + period) % period
                            if index >= size { index = period - index }
                        }
                    }
                }
                if outside { break }
                offset += index * inputStrides[axis]
            }
            destination[position] = outside ? fill : source[offset]
            var axis = rank - 1
            while axis >= 0 {
                counter[axis] += 1
                if counter[axis] < output.shape[axis] { break }
                counter[axis] = 0
                axis -= 1
            }
        }
    }

    /// Calls `body` with an unsigned integer type as wide as one element of `dtype`.
    static func withWord(_ dtype: DType, _ body: (any FixedWidthInteger.Type) -> Void) {
        switch dtype.byteSize {
        case 1: body(UInt8.self)
        case 2: body(UInt16.self)
        case 4: body(UInt32.self)
        default: body(UInt64.self)
        }
    }
}
