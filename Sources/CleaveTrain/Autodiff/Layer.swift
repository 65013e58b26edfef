import CleaveONNX

/// Whether a forward pass trains (batch statistics, dropout, simulated quantization) or infers.
public enum Mode: Sendable {
    case training, inference
}

/// One differentiable step of a network.
///
/// `forward` keeps what `backward` needs (only in training mode); `backward`
/// takes the gradient of the loss with respect to the output, adds the
/// parameters' gradients to ``Parameter/gradient`` and returns the gradient
/// with respect to the input. `export` writes the same computation as ONNX nodes.
public protocol Layer: AnyObject {
    /// Prefix of node and weight names in the exported model.
    var name: String { get }
    /// Trainable tensors, in a stable order.
    var parameters: [Parameter] { get }
    /// Non-trainable state saved with the model (running statistics).
    var buffers: [Parameter] { get }
    func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor
    func backward(_ gradient: FloatTensor) -> FloatTensor
    /// Per-sample output shape for a per-sample input shape.
    func outputShape(_ input: [Int]) -> [Int]
    /// Multiply-accumulates per sample, for the head/tail cost split.
    func multiplyAdds(_ input: [Int]) -> Int
    /// Adds this layer's nodes after tensor `input` and returns the name of its output.
    func export(to builder: inout ModelBuilder, input: String) -> String
}

extension Layer {
    public var parameters: [Parameter] { [] }
    public var buffers: [Parameter] { [] }
    public func outputShape(_ input: [Int]) -> [Int] { input }
    public func multiplyAdds(_ input: [Int]) -> Int { 0 }
}

/// Layers applied one after another.
public final class Sequential: Layer {
    public let name: String
    public let layers: [any Layer]

    /// A chain of `layers`.
    public init(_ name: String, _ layers: [any Layer]) {
        self.name = name
        self.layers = layers
    }

    public var parameters: [Parameter] { layers.flatMap(\.parameters) }
    public var buffers: [Parameter] { layers.flatMap(\.buffers) }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        layers.reduce(input) { $1.forward($0, mode: mode) }
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        layers.reversed().reduce(gradient) { $1.backward($0) }
    }

    public func outputShape(_ input: [Int]) -> [Int] {
        layers.reduce(input) { $1.outputShape($0) }
    }

    public func multiplyAdds(_ input: [Int]) -> Int {
        var shape = input
        var total = 0
        for layer in layers {
            total += layer.multiplyAdds(shape)
            shape = layer.outputShape(shape)
        }
        return total
    }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        layers.reduce(input) { $1.export(to: &builder, input: $0) }
    }

    /// Freezes or unfreezes every parameter.
    public func setTrainable(_ trainable: Bool) {
        for parameter in parameters { parameter.trainable = trainable }
    }
}

/// `x + body(x)`: a residual connection (ONNX `Add`).
public final class Residual: Layer {
    public let name: String
    public let body: Sequential

    /// A residual block around `body`, whose output shape must equal its input shape.
    public init(_ name: String, _ body: Sequential) {
        self.name = name
        self.body = body
    }

    public var parameters: [Parameter] { body.parameters }
    public var buffers: [Parameter] { body.buffers }

    public func forward(_ input: FloatTensor, mode: Mode) -> FloatTensor {
        var output = body.forward(input, mode: mode)
        precondition(output.shape == input.shape, "\(name): the residual body changes the shape \(input.shape) → \(output.shape)")
        for index in output.data.indices { output.data[index] += input.data[index] }
        return output
    }

    public func backward(_ gradient: FloatTensor) -> FloatTensor {
        var result = body.backward(gradient)
        for index in result.data.indices { result.data[index] += gradient.data[index] }
        return result
    }

    public func multiplyAdds(_ input: [Int]) -> Int { body.multiplyAdds(input) + input.reduce(1, *) }

    public func export(to builder: inout ModelBuilder, input: String) -> String {
        let inner = body.export(to: &builder, input: input)
        return builder.node("Add", [input, inner], ["\(name)_sum"])
    }
}
