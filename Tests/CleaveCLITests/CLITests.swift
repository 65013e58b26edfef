import Foundation
import Testing

/// Runs the built `cleave` binary the way a user does.
@Suite struct CLITests {
    static var binary: URL {
        let products =
            Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }?.deletingLastPathComponent()
            ?? URL(fileURLWithPath: ".build/debug")
        return products.appendingPathComponent("cleave")
    }

    func cleave(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let error = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output, error)
    }

    func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-\(UUID().uuidString).onnx").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func randomBytesGiveOneLineErrorAndNonZeroExit() throws {
        let path = try temporaryFile((0..<300).map { UInt8(($0 * 131 + 7) % 256) })
        let result = try cleave(["model", "inspect", path])
        #expect(result.status != 0)
        #expect(result.error.split(separator: "\n").count == 1)
        #expect(result.error.contains("not a valid ONNX model"))
    }

    @Test func missingFileIsNamed() throws {
        let result = try cleave(["model", "inspect", "/nonexistent/model.onnx"])
        #expect(result.status != 0)
        #expect(result.error.contains("/nonexistent/model.onnx"))
    }

    @Test func conformanceModelInspects() throws {
        let result = try cleave(["model", "inspect", "/usr/share/libonnx-testdata/data/node/test_conv_with_strides_padding/model.onnx"])
        #expect(result.status == 0)
        #expect(result.output.contains("operators  Conv×1"))
    }

    @Test func helpExplainsCommands() throws {
        let result = try cleave(["model", "--help"])
        #expect(result.output.contains("inspect"))
        #expect(result.output.contains("split"))
    }
}
