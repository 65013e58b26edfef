#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Resampling along one axis at a time (ONNX `Resize`, nearest and linear modes).
///
/// Multilinear interpolation is separable, so an N-d resize is a sequence of
/// 1-d passes, one per axis whose size changes.
public enum Resample {
    /// How an output coordinate maps back to an input coordinate (ONNX `coordinate_transformation_mode`).
    public enum CoordinateMode: String, Sendable {
        case halfPixel = "half_pixel"
        case pytorchHalfPixel = "pytorch_half_pixel"
        case alignCorners = "align_corners"
        case asymmetric
        case tfHalfPixelForNN = "tf_half_pixel_for_nn"
    }

    /// How a fractional coordinate picks a neighbour in nearest mode (ONNX `nearest_mode`).
    public enum NearestRounding: String, Sendable {
        case roundPreferFloor = "round_prefer_floor"
        case roundPreferCeil = "round_prefer_ceil"
        case floor, ceil
    }

    /// Interpolation method.
    public enum Method: Sendable, Equatable {
        case nearest(NearestRounding)
        case linear
    }

    /// The input coordinate that output index `index` reads, for one axis.
    public static func sourceCoordinate(
        _ index: Int, inputLength: Int, outputLength: Int, scale: Double, mode: CoordinateMode
    ) -> Double {
        let x = Double(index)
        switch mode {
        case .halfPixel: return (x + 0.5) / scale - 0.5
        case .pytorchHalfPixel: return outputLength > 1 ? (x + 0.5) / scale - 0.5 : 0
        case .alignCorners:
            // ONNX uses the unrounded resized length (input · scale) here.
            let resized = Double(inputLength) * scale
            return resized > 1 ? x * Double(inputLength - 1) / (resized - 1) : 0
        case .asymmetric: return x / scale
        case .tfHalfPixelForNN: return (x + 0.5) / scale
        }
    }

    /// Resamples float32 `input` along `axis` to `outputLength` into `output`.
    public static func resizeAxis(
        _ input: Tensor, axis: Int, outputLength: Int, scale: Double, method: Method,
        mode: CoordinateMode, into output: Tensor
    ) {
        let outer = input.shape[..<axis].reduce(1, *)
        let length = input.shape[axis]
        let inner = input.shape[(axis + 1)...].reduce(1, *)
        let x = input.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        // Per output index: two source indices and the weight of the second.
        var lower = [Int](repeating: 0, count: outputLength)
        var upper = [Int](repeating: 0, count: outputLength)
        var weight = [Float](repeating: 0, count: outputLength)
        for index in 0..<outputLength {
            let coordinate = sourceCoordinate(index, inputLength: length, outputLength: outputLength, scale: scale, mode: mode)
            switch method {
            case .nearest(let rounding):
                var picked: Double
                switch rounding {
                case .roundPreferFloor: picked = coordinate == coordinate.rounded(.down) + 0.5 ? coordinate.rounded(.down) : coordinate.rounded()
                case .roundPreferCeil:
                    picked = coordinate.rounded(.toNearestOrAwayFromZero)
                    if coordinate == coordinate.rounded(.down) + 0.5 { picked = coordinate.rounded(.up) }
                case .floor: picked = coordinate.rounded(.down)
                case .ceil: picked = coordinate.rounded(.up)
                }
                let clamped = min(max(Int(picked), 0), length - 1)
                lower[index] = clamped
                upper[index] = clamped
            case .linear:
                let clamped = min(max(coordinate, 0), Double(length - 1))
                let base = Int(clamped.rounded(.down))
                lower[index] = base
                upper[index] = min(base + 1, length - 1)
                weight[index] = Float(clamped - Double(base))
            }
        }
        for block in 0..<outer {
            let source = x + block * length * inner
            let destination = y + block * outputLength * inner
            for index in 0..<outputLength {
                let a = source + lower[index] * inner
                let b = source + upper[index] * inner
                let w = weight[index]
                let out = destination + index * inner
                if w == 0 {
                    out.update(from: a, count: inner)
                } else {
                    for element in 0..<inner { out[element] = a[element] + (b[element] - a[element]) * w }
                }
            }
        }
    }
}
