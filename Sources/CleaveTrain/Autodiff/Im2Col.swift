import CleaveONNX
import CleaveTensor

/// The 2-D window arrangement shared by convolution, its transpose and pooling layers.
public struct Window2D: Sendable, Equatable {
    public var kernel: Int
    public var stride: Int
    public var padding: Int

    /// A square window; `padding` zeros on every side.
    public init(kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
    }

    /// Output size along one axis of size `size`.
    public func outputSize(_ size: Int) -> Int { (size + 2 * padding - kernel) / stride + 1 }

    /// The ONNX attributes that describe this window (`kernel_shape`, `strides`, `pads`).
    var attributes: [String: AttributeValue] {
        ["kernel_shape": .ints([kernel, kernel]), "strides": .ints([stride, stride]), "pads": .ints([padding, padding, padding, padding])]
    }
}

/// Unfolding image windows into matrix columns (and folding them back), so that
/// convolutions over a whole batch become one matrix product.
///
/// The column matrix has one row per (channel, kernel row, kernel column) and one
/// column per (sample, output row, output column): `[C·k·k, N·OH·OW]`.
enum Im2Col {
    static func unfold(
        _ input: UnsafePointer<Float>, batch: Int, channels: Int, height: Int, width: Int,
        window: Window2D, into columns: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let k = window.kernel
        let outHeight = window.outputSize(height)
        let outWidth = window.outputSize(width)
        let plane = outHeight * outWidth
        let rowLength = batch * plane
        pool.parallelFor(channels) { range in
            for channel in range {
                for ky in 0..<k {
                    for kx in 0..<k {
                        let row = columns + ((channel * k + ky) * k + kx) * rowLength
                        for sample in 0..<batch {
                            let image = input + (sample * channels + channel) * height * width
                            let out = row + sample * plane
                            for oy in 0..<outHeight {
                                let y = oy * window.stride - window.padding + ky
                                let line = out + oy * outWidth
                                guard y >= 0 && y < height else {
                                    line.update(repeating: 0, count: outWidth)
                                    continue
                                }
                                for ox in 0..<outWidth {
                                    let x = ox * window.stride - window.padding + kx
                                    line[ox] = x >= 0 && x < width ? image[y * width + x] : 0
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds every column entry back onto the image position it came from (`output` is zeroed first).
    static func fold(
        _ columns: UnsafePointer<Float>, batch: Int, channels: Int, height: Int, width: Int,
        window: Window2D, into output: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let k = window.kernel
        let outHeight = window.outputSize(height)
        let outWidth = window.outputSize(width)
        let plane = outHeight * outWidth
        let rowLength = batch * plane
        pool.parallelFor(channels) { range in
            for channel in range {
                for sample in 0..<batch {
                    (output + (sample * channels + channel) * height * width).update(repeating: 0, count: height * width)
                }
                for ky in 0..<k {
                    for kx in 0..<k {
                        let row = columns + ((channel * k + ky) * k + kx) * rowLength
                        for sample in 0..<batch {
                            let image = output + (sample * channels + channel) * height * width
                            let source = row + sample * plane
                            for oy in 0..<outHeight {
                                let y = oy * window.stride - window.padding + ky
                                guard y >= 0 && y < height else { continue }
                                for ox in 0..<outWidth {
                                    let x = ox * window.stride - window.padding + kx
                                    if x >= 0 && x < width { image[y * width + x] += source[oy * outWidth + ox] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `[N, C, P]` → `[C, N·P]`.
    static func channelsFirst(_ input: UnsafePointer<Float>, batch: Int, channels: Int, plane: Int, into output: UnsafeMutablePointer<Float>) {
        for sample in 0..<batch {
            for channel in 0..<channels {
                (output + channel * batch * plane + sample * plane).update(from: input + (sample * channels + channel) * plane, count: plane)
            }
        }
    }

    /// `[C, N·P]` → `[N, C, P]`.
    static func batchFirst(_ input: UnsafePointer<Float>, batch: Int, channels: Int, plane: Int, into output: UnsafeMutablePointer<Float>) {
        for sample in 0..<batch {
            for channel in 0..<channels {
                (output + (sample * channels + channel) * plane).update(from: input + channel * batch * plane + sample * plane, count: plane)
            }
        }
    }
}
