import CleaveONNX
import CleaveTensor

/// Max pooling over square windows without padding (ONNX `MaxPool`).
public final class MaxPool2D: Layer {
    public let name: String
    public let window: Window2D
    private var winners: [Int32] = []
    private var inputShape: [Int] = []

    /// Pooling with a `kernel`×`kernel` window moving by `stride` (default: the kernel).
    public init(_ name: String, kernel: Int, stride: Int? = nil) {
        self.name = name
        window = Window2D(kernel: kernel, stride: stride ?? kernel)
    }

    public func outputShape(_ input: [Int]) -> [Int] { [input[0], window.outputSize(input[1]), window.outputSize(input[2])] }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        let (batch, channels, height, width) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let (outHeight, outWidth) = (window.outputSize(height), window.outputSize(width))
        var output = FloatTensor(shape: [batch, channels, outHeight, outWidth])
        var chosen = [Int32](repeating: 0, count: output.count)
        input.data.withUnsafeBufferPointer { x in
            for plane in 0..<(batch * channels) {
                let image = plane * height * width
                for oy in 0..<outHeight {
                    for ox in 0..<outWidth {
                        var best = -Float.infinity
                        var bestIndex = image
                        for ky in 0..<window.kernel {
                            let row = image + (oy * window.stride + ky) * width + ox * window.stride
                            for kx in 0..<window.kernel where x[row + kx] > best {
                                best = x[row + kx]
                                bestIndex = row + kx
                            }
                        }
                        let out = (plane * outHeight + oy) * outWidth + ox
                        output.data[out] = best
                        chosen[out] = Int32(bestIndex)
                    }
                }
            }
        }
        if mode == .training {
            winners = chosen
            inputShape = input.shape
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        var result = FloatTensor(shape: inputShape)
        for (index, winner) in winners.enumerated() { result.data[Int(winner)] += gradient.data[index] }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        builder.node(
            "MaxPool", [input], [name],
            attributes: window.attributes)
    }
}

/// Average pooling over square windows without padding (ONNX `AveragePool`).
public final class AveragePool2D: Layer {
    public let name: String
    public let window: Window2D
    private var inputShape: [Int] = []

    public init(_ name: String, kernel: Int, stride: Int? = nil) {
        self.name = name
        window = Window2D(kernel: kernel, stride: stride ?? kernel)
    }

    public func outputShape(_ input: [Int]) -> [Int] { [input[0], window.outputSize(input[1]), window.outputSize(input[2])] }
    public func multiplyAdds(_ input: [Int]) -> Int { input.reduce(1, *) }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        inputShape = input.shape
        let (planes, height, width) = (input.shape[0] * input.shape[1], input.shape[2], input.shape[3])
        let (outHeight, outWidth) = (window.outputSize(height), window.outputSize(width))
        var output = FloatTensor(shape: [input.shape[0], input.shape[1], outHeight, outWidth])
        let share = 1 / Float(window.kernel * window.kernel)
        for plane in 0..<planes {
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    var sum: Float = 0
                    for ky in 0..<window.kernel {
                        for kx in 0..<window.kernel {
                            sum += input.data[(plane * height + oy * window.stride + ky) * width + ox * window.stride + kx]
                        }
                    }
                    output.data[(plane * outHeight + oy) * outWidth + ox] = sum * share
                }
            }
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        var result = FloatTensor(shape: inputShape)
        let (planes, height, width) = (inputShape[0] * inputShape[1], inputShape[2], inputShape[3])
        let (outHeight, outWidth) = (gradient.shape[2], gradient.shape[3])
        let share = 1 / Float(window.kernel * window.kernel)
        for plane in 0..<planes {
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    let g = gradient.data[(plane * outHeight + oy) * outWidth + ox] * share
                    for ky in 0..<window.kernel {
                        for kx in 0..<window.kernel {
                            result.data[(plane * height + oy * window.stride + ky) * width + ox * window.stride + kx] += g
                        }
                    }
                }
            }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        builder.node(
            "AveragePool", [input], [name],
            attributes: window.attributes)
    }
}

/// The mean of each channel's plane (ONNX `GlobalAveragePool`): `[N, C, H, W]` → `[N, C, 1, 1]`.
public final class GlobalAveragePool: Layer {
    public let name: String
    private var inputShape: [Int] = []

    public init(_ name: String) { self.name = name }

    public func outputShape(_ input: [Int]) -> [Int] { [input[0], 1, 1] }
    public func multiplyAdds(_ input: [Int]) -> Int { input.reduce(1, *) }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        inputShape = input.shape
        let plane = input.shape[2] * input.shape[3]
        let planes = input.shape[0] * input.shape[1]
        var output = FloatTensor(shape: [input.shape[0], input.shape[1], 1, 1])
        for index in 0..<planes {
            output.data[index] = input.data[(index * plane)..<((index + 1) * plane)].reduce(0, +) / Float(plane)
        }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        let plane = inputShape[2] * inputShape[3]
        var result = FloatTensor(shape: inputShape)
        for index in 0..<(inputShape[0] * inputShape[1]) {
            let share = gradient.data[index] / Float(plane)
            for position in (index * plane)..<((index + 1) * plane) { result.data[position] = share }
        }
        return result
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String { builder.node("GlobalAveragePool", [input], [name]) }
}
