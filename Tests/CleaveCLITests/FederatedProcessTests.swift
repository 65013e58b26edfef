import Foundation
import Testing

/// `cleave fl simulate` as a user runs it: killed with SIGKILL mid-run and started again.
@Suite(.serialized) struct FederatedProcessTests {
    static let dataPresent = FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

    func arguments(checkpoint: String) -> [String] {
        [
            "fl", "simulate", "--strategy", "fedadam", "--server-learning-rate", "0.01", "--clients", "4", "--rounds", "5",
            "--local-epochs", "1", "--compression", "topk:0.1", "--dropout", "0.2", "--deadline", "100", "--train-limit", "800",
            "--test-limit", "300", "--seed", "5", "--checkpoint", checkpoint,
        ]
    }

    @Test(.enabled(if: dataPresent, "install dataset-fashion-mnist"))
    func killedRunResumesFromItsCheckpointAndEndsAsAnUninterruptedOne() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-fl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let whole = try CLITests().cleave(arguments(checkpoint: "\(directory)/whole.json"))
        try #require(whole.status == 0, "uninterrupted run failed: \(whole.error)")
        let finalLine = try #require(whole.output.split(separator: "\n").first { $0.hasPrefix("final accuracy") })

        // Kill the second run with SIGKILL as soon as it has reported round 2.
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = arguments(checkpoint: "\(directory)/killed.json")
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var seen = ""
        while !seen.contains("round    2") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the run ended before it could be killed: \(seen)")

        let resumed = try CLITests().cleave(arguments(checkpoint: "\(directory)/killed.json"))
        try #require(resumed.status == 0, "resumed run failed: \(resumed.error)")
        #expect(resumed.output.contains("resuming after round 2") || resumed.output.contains("resuming after round 3"))
        let resumedFinal = resumed.output.split(separator: "\n").first { $0.hasPrefix("final accuracy") }
        #expect(resumedFinal == finalLine, "uninterrupted: \(finalLine); resumed: \(resumedFinal ?? "none")")
        // Every round's line of the resumed run is the uninterrupted run's.
        let rounds = { (text: String) in
            text.split(separator: "\n").filter { $0.hasPrefix("round") }.map { $0.components(separatedBy: "  (").first ?? "" }
        }
        #expect(Array(rounds(whole.output).suffix(rounds(resumed.output).count)) == rounds(resumed.output))

        let other = try CLITests().cleave(arguments(checkpoint: "\(directory)/killed.json").map { $0 == "fedadam" ? "fedavg" : $0 })
        #expect(other.status != 0)
        #expect(other.error.contains("is of another run"))
    }
}
