import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

/// Runs the ONNX project's own node tests (Debian's `libonnx-testdata`) for every operator of the runtime core.
@Suite struct ConformanceTests {
    static let root = "/usr/share/libonnx-testdata/data/node"

    static let listed = [
        "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Clip", "Sigmoid",
        "Tanh", "HardSigmoid", "HardSwish", "Softmax", "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool",
        "BatchNormalization", "Flatten", "Reshape", "Transpose", "Concat", "Squeeze", "Unsqueeze", "Identity", "Dropout",
        "Shape", "Gather", "Constant", "Pad", "Resize", "QuantizeLinear", "DequantizeLinear",
    ]

    enum Outcome { case passed, failed(String), skipped(String) }

    /// The listed operator a test case belongs to: by the model's single operator, else by its name.
    static func owner(of directory: String, ops: [String]) -> String? {
        let distinct = Set(ops)
        if distinct.count == 1, let op = distinct.first, listed.contains(op) { return op }
        let name = directory.dropFirst("test_".count).lowercased()
        let aliases = ["batchnorm": "BatchNormalization", "basic_conv": "Conv", "edge_pad": "Pad", "reflect_pad": "Pad", "constant_pad": "Pad"]
        let candidates = listed.map { ($0.lowercased(), $0) } + aliases.map { ($0.key, $0.value) }
        return
            candidates
            .filter { name == $0.0 || name.hasPrefix($0.0 + "_") }
            .max { $0.0.count < $1.0.count }?.1
    }

    static func runCase(_ directory: String) -> Outcome {
        let path = "\(root)/\(directory)"
        let model: Model
        do {
            model = try Model(contentsOf: "\(path)/model.onnx")
        } catch let error as ONNXError {
            return .skipped(error.description)
        } catch {
            return .failed("\(error)")
        }
        if let input = model.graph.inputs.first(where: { $0.dtype == nil }) {
            return .skipped("input '\(input.name)' is an optional or sequence value, not a tensor")
        }
        let session = InferenceSession(model: model, threads: 2)
        let sets = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasPrefix("test_data_set_") }.sorted()
        guard !sets.isEmpty else { return .skipped("no test data sets") }
        for set in sets {
            let folder = "\(path)/\(set)"
            do {
                var inputs: [String: Tensor] = [:]
                for (index, declared) in model.graph.inputs.enumerated() {
                    let file = "\(folder)/input_\(index).pb"
                    guard FileManager.default.fileExists(atPath: file) else { continue }
                    inputs[declared.name] = try TensorFile.read(file).tensor
                }
                // Twice: the second run reuses the first one's arena, filled with NaNs in between,
                // so a kernel that leaves part of an output unwritten or accumulates into it fails.
                for pass in ["", " (second run, reused arena)"] {
                    let outputs = try session.run(inputs)
                    for (index, declared) in model.graph.outputs.enumerated() {
                        let expected = try TensorFile.read("\(folder)/output_\(index).pb").tensor
                        guard let actual = outputs[declared.name] else { return .failed("\(set)\(pass): output \(declared.name) missing") }
                        if let problem = compare(actual, expected) { return .failed("\(set)\(pass) output \(declared.name): \(problem)") }
                    }
                    session.poisonWorkspaces()
                }
            } catch let error as ONNXError where error.description.contains("not supported") {
                return .skipped(error.description)
            } catch {
                return .failed("\(set): \(error)")
            }
        }
        return .passed
    }

    static func compare(_ actual: Tensor, _ expected: Tensor) -> String? {
        guard actual.shape == expected.shape else { return "shape \(actual.shape), expected \(expected.shape)" }
        guard actual.dtype == expected.dtype else { return "type \(actual.dtype), expected \(expected.dtype)" }
        let a = actual.doubles()
        let b = expected.doubles()
        for index in a.indices {
            if a[index].isNaN && b[index].isNaN { continue }
            if abs(a[index] - b[index]) > 1e-5 + 1e-4 * abs(b[index]) {
                return "element \(index) is \(a[index]), expected \(b[index])"
            }
        }
        return nil
    }

    @Test func operatorConformance() throws {
        let directories = try FileManager.default.contentsOfDirectory(atPath: Self.root).filter { $0.hasPrefix("test_") }.sorted()
        #expect(directories.count > 100, "install Debian's libonnx-testdata: \(Self.root) is missing or empty")
        var table: [String: (passed: Int, failed: [String], skipped: [String])] = [:]
        for directory in directories {
            let ops = (try? Model.operatorTypes(atPath: "\(Self.root)/\(directory)/model.onnx")) ?? []
            guard let op = Self.owner(of: directory, ops: ops) else { continue }
            var row = table[op] ?? (0, [], [])
            switch Self.runCase(directory) {
            case .passed: row.passed += 1
            case .failed(let reason): row.failed.append("\(directory): \(reason)")
            case .skipped(let reason): row.skipped.append("\(directory): \(reason)")
            }
            table[op] = row
        }
        var report = "operator | passed | failed | skipped\n"
        for op in Self.listed {
            let row = table[op] ?? (0, [], [])
            report += "\(op) | \(row.passed) | \(row.failed.count) | \(row.skipped.count)\n"
            for line in row.failed { report += "  FAILED \(line)\n" }
            for line in row.skipped { report += "  skipped \(line)\n" }
        }
        print(report)
        for op in Self.listed {
            let row = table[op] ?? (0, [], [])
            #expect(row.passed > 0, "no passing case for \(op)")
            #expect(row.failed.isEmpty, "\(op): \(row.failed.joined(separator: "; "))")
        }
    }
}
