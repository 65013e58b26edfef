import CleaveTensor

/// Maps ONNX operator names to kernel factories, with the opsets each supports.
///
/// Everything Cleave can run is listed here; a node outside it fails at load
/// time with its name, operator and opset.
struct OperatorRegistry: Sendable {
    struct Entry: Sendable {
        /// Opsets of the default domain whose semantics the kernel implements.
        let opsets: ClosedRange<Int>
        let make: @Sendable (NodeContext) throws -> any OperatorKernel
    }

    let entries: [String: Entry]

    /// Names of all supported operators, sorted.
    var operators: [String] { entries.keys.sorted() }

    /// Builds the kernel for `node`, or throws when the operator or its opset is unsupported.
    func kernel(for node: Node, opset: Int) throws -> any OperatorKernel {
        guard node.domain.isEmpty, let entry = entries[node.opType], entry.opsets.contains(opset) else {
            throw ONNXError.unsupportedOperator(node: node.name, op: node.opType, domain: node.domain, opset: opset)
        }
        return try entry.make(NodeContext(node: node, opset: opset))
    }
}

extension OperatorRegistry {
    /// The operators of the runtime core, opsets 7 to 21.
    static let standard = OperatorRegistry(entries: [
        "Add": binary(.add), "Sub": binary(.subtract), "Mul": binary(.multiply), "Div": binary(.divide),
        "Relu": activation { _ in .relu },
        "LeakyRelu": activation { .leakyRelu(alpha: try $0.float("alpha", default: 0.01)) },
        "Sigmoid": activation { _ in .sigmoid },
        "Tanh": activation { _ in .tanh },
        "HardSigmoid": activation {
            .hardSigmoid(alpha: try $0.float("alpha", default: 0.2), beta: try $0.float("beta", default: 0.5))
        },
        "HardSwish": activation { _ in .hardSwish },
        "Clip": entry { context in
            let bounds: (Float, Float)? =
                context.opset < 11
                ? (try context.float("min", default: -.greatestFiniteMagnitude), try context.float("max", default: .greatestFiniteMagnitude))
                : nil
            return ClipKernel(node: context.name, attributeBounds: bounds)
        },
        "Identity": entry { IdentityKernel(node: $0.name, hasMask: false) },
        "Dropout": entry { IdentityKernel(node: $0.name, hasMask: true) },
        "Softmax": softmax(logarithm: false),
        "LogSoftmax": softmax(logarithm: true),
        "Conv": entry { ConvKernel(node: $0.name, window: try WindowAttributes($0)) },
        "ConvTranspose": entry {
            ConvTransposeKernel(
                node: $0.name, window: try WindowAttributes($0),
                outputPadding: try $0.ints("output_padding"), outputShape: try $0.ints("output_shape"))
        },
        "MaxPool": entry { context in
            guard context.node.outputs.count < 2 || context.node.outputs[1].isEmpty else {
                throw context.fail("the Indices output is not supported")
            }
            return PoolKernel(
                node: context.name, op: "MaxPool", window: try WindowAttributes(context), kind: .max,
                ceilMode: try context.int("ceil_mode", default: 0) != 0)
        },
        "AveragePool": entry { context in
            PoolKernel(
                node: context.name, op: "AveragePool", window: try WindowAttributes(context),
                kind: .average(countIncludePad: try context.int("count_include_pad", default: 0) != 0),
                ceilMode: try context.int("ceil_mode", default: 0) != 0)
        },
        "GlobalAveragePool": Entry(opsets: 1...21) { GlobalAveragePoolKernel(node: $0.name) },
        "BatchNormalization": entry { context in
            BatchNormKernel(
                node: context.name, epsilon: try context.float("epsilon", default: 1e-5),
                momentum: try context.float("momentum", default: 0.9),
                training: try context.int("training_mode", default: 0) != 0 && context.node.outputs.count > 1)
        },
        "Gemm": entry { context in
            GemmKernel(
                node: context.name, alpha: try context.float("alpha", default: 1), beta: try context.float("beta", default: 1),
                transposeA: try context.int("transA", default: 0) != 0, transposeB: try context.int("transB", default: 0) != 0)
        },
        "MatMul": entry { MatMulKernel(node: $0.name) },
        "Flatten": entry { FlattenKernel(node: $0.name, axis: try $0.int("axis", default: 1)) },
        "Reshape": entry { context in
            ReshapeKernel(
                node: context.name, allowZero: try context.int("allowzero", default: 0) != 0,
                attributeShape: context.opset < 5 ? try context.ints("shape") : nil)
        },
        "Transpose": entry { TransposeKernel(node: $0.name, permutation: try $0.ints("perm")) },
        "Concat": entry { context in
            guard let axis = try context.int("axis") else { throw context.fail("the axis attribute is required") }
            return ConcatKernel(node: context.name, axis: axis)
        },
        "Squeeze": entry { SqueezeKernel(node: $0.name, attributeAxes: $0.opset < 13 ? try $0.ints("axes") : nil) },
        "Unsqueeze": entry { UnsqueezeKernel(node: $0.name, attributeAxes: $0.opset < 13 ? try $0.ints("axes") : nil) },
        "Shape": entry { ShapeKernel(node: $0.name, start: try $0.int("start", default: 0), end: try $0.int("end")) },
        "Gather": entry { GatherKernel(node: $0.name, axis: try $0.int("axis", default: 0)) },
        "Constant": entry { try ConstantKernel($0) },
        "Pad": entry { context in
            let mode = try context.string("mode", default: "constant")
            guard let parsed = Layout.PadMode(rawValue: mode) else { throw context.fail("mode '\(mode)' is not supported") }
            return PadKernel(
                node: context.name, mode: parsed, attributePads: context.opset < 11 ? try context.ints("pads") : nil,
                attributeValue: try context.float("value", default: 0))
        },
        "Resize": entry { try ResizeKernel($0) },
        "QuantizeLinear": entry { context in
            if try context.int("block_size", default: 0) != 0 { throw context.fail("blocked quantization is not supported") }
            return QuantizeLinearKernel(node: context.name, axis: try context.int("axis", default: 1), quantizes: true)
        },
        "DequantizeLinear": entry { context in
            if try context.int("block_size", default: 0) != 0 { throw context.fail("blocked quantization is not supported") }
            return QuantizeLinearKernel(node: context.name, axis: try context.int("axis", default: 1), quantizes: false)
        },
    ])

    private static let supportedOpsets = 7...21

    private static func entry(_ make: @escaping @Sendable (NodeContext) throws -> any OperatorKernel) -> Entry {
        Entry(opsets: supportedOpsets, make: make)
    }

    private static func binary(_ operation: BinaryOperator) -> Entry {
        entry { BinaryKernel(node: $0.name, operation: operation) }
    }

    private static func activation(_ make: @escaping @Sendable (NodeContext) throws -> Activation) -> Entry {
        // Activations kept their meaning since opset 6 (earlier ones only differ in a legacy `consumed_inputs`).
        Entry(opsets: 6...21) { ActivationKernel(node: $0.name, activation: try make($0)) }
    }

    private static func softmax(logarithm: Bool) -> Entry {
        entry { context in
            SoftmaxKernel(
                node: context.name, axis: try context.int("axis", default: context.opset < 13 ? 1 : -1),
                logarithm: logarithm, flattens: context.opset < 13)
        }
    }
}
