import ArgumentParser
import CleaveAgent
import CleaveCoordinator
import CleaveDatasets
import CleaveNetem
import CleaveProtocol
import CleaveTestbed
import Foundation
import Logging

struct HarnessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "harness",
        abstract: "Run split inference through degraded links and record what happens.",
        subcommands: [HarnessRun.self])
}

struct HarnessRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Play a scenario against a broker, a coordinator and agents behind proxies.",
        discussion: """
            Starts Mosquitto on a free loopback port, a coordinator connected to it directly, and \
            --agents agents (device profiles from --devices, round robin), each connected through its \
            own netem proxy named a1, a2, … (so a scenario can give each its own link). Once the agents \
            have their models (over an unimpaired link), the scenario's timeline starts and every agent \
            sends Fashion-MNIST test images at --rate requests per second, one at a time, for the \
            scenario's duration; a request that gets no answer within --timeout counts as lost. This \
            is repeated for each mode of --modes (fixed local, split, offload).

            For each run it writes OUT/RUN.csv (one line per request: time_s, agent, mode, bytes, \
            latency_ms, outcome) and OUT/RUN.svg (latency over time by mode, lost requests, the link's \
            rate shaded and outages in grey), and prints a summary table. --time-scale 0.25 plays the \
            scenario four times faster (a 120 s scenario in 30 s).

            Mode `adaptive` runs each agent's own policy, as `cleave agent --mode adaptive` does \
            (its decisions and the numbers behind them are logged when the mode changes): a remote \
            request whose answer is later than the policy's hedging delay (at most \
            --adaptive-timeout) is computed locally instead, so it is answered late rather than \
            lost. The fixed modes keep the agent's offline queue and retries but have no fallback.

            The boards' compute is emulated: before a request, the agent waits for the time the \
            device part would take on the board, FLOPs / (profile gflops) × --compute-scale (the \
            whole model for local, the head for split, nothing for offload); FLOPs come from the \
            model files. --compute-scale 10 makes the device ten times slower (or the model ten \
            times heavier), which is where split and offload start to pay.
            Modes `split-parts` and `split-rows` are split with each request sent in parts, one frame \
            per patch (or per row of patches) of a head plan that ends at the cut, as `cleave agent \
            --stream-patches patch|row` does: the agent sends part i of n at (i + 1) / n of the \
            emulated head time, so that sending overlaps computing.

            With --comparison FILE the per-phase table of all runs (mean / p95 ms and lost \
            requests, the first 5 s of the run and after each change left out, a lost request \
            counted as the timeout) is appended to FILE as Markdown.
            """)

    @Argument(help: "The scenario file (YAML).") var scenario: String
    @Option(help: "Model folder with manifest.json.") var model = "models/fmnist/c4"
    @Option(help: "Folder of device profiles.") var devices = "devices"
    @Option(help: "Agents, each behind its own proxy.") var agents = 3
    @Option(help: "Requests per second per agent.") var rate = 5.0
    @Option(help: "Runs, comma-separated: local, split, split-parts, split-rows, offload, adaptive.") var modes = "local,split,offload,adaptive"
    @Option(help: "Seconds an adaptive agent waits before falling back to local.") var adaptiveTimeout = 1.0
    @Option(help: "Multiply the device's compute time by this.") var computeScale = 1.0
    @Option(help: "Append the comparison table (Markdown) to this file.") var comparison: String?
    @Option(help: "Seconds to wait for an answer.") var timeout = 5.0
    @Option(help: "Multiply the scenario's times by this.") var timeScale = 1.0
    @Option(help: "Where the CSV and SVG files go (default harness-out/SCENARIO).") var out: String?
    @Option(help: "Fashion-MNIST folder.") var dataset: String = FashionMNIST.defaultDirectory

    func run() async throws {
        guard agents >= 1, rate > 0, timeout > 0, timeScale > 0 else {
            throw ValidationError("--agents, --rate, --timeout and --time-scale must be positive")
        }
        let played = try Scenario.load(scenario).scaled(by: timeScale)
        let runModes = try modes.split(separator: ",").map { name -> (mode: InferenceMode?, parts: PatchStreaming?) in
            if name == "adaptive" { return (nil, nil) }
            if name == "split-parts" { return (.split, .patch) }
            if name == "split-rows" { return (.split, .row) }
            guard let mode = InferenceMode(rawValue: String(name)) else { throw ValidationError("unknown mode '\(name)' in --modes") }
            return (mode, nil)
        }
        let bundle = try ModelBundle(directory: model)
        let test = try FashionMNIST(split: .test, directory: dataset)
        let profileFiles = try FileManager.default.contentsOfDirectory(atPath: devices).filter { $0.hasSuffix(".yaml") }.sorted()
        guard !profileFiles.isEmpty else { throw ValidationError("no device profiles (*.yaml) in \(devices)") }
        let profiles = try profileFiles.map { try DeviceProfile.load("\(devices)/\($0)") }
        let folder = out ?? "harness-out/\(played.name)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)

        let testbed = try Testbed()
        log(
            "mosquitto on 127.0.0.1:\(testbed.brokerPort); scenario '\(played.name)' (\(Int(played.duration / 1000)) s), \(agents) agents at \(rate) req/s"
        )
        var logger = Logger(label: "cleave.harness")
        logger.logLevel = .notice
        let reports: [HarnessReport]
        do {
            reports = try await testbed.run(logger: logger) { testbed in
                try await testbed.addCoordinator(CoordinatorConfiguration(id: "harness-coordinator"), bundle: bundle)
                var reports: [HarnessReport] = []
                for (mode, parts) in runModes {
                    let name = parts.map { $0 == .patch ? "split-parts" : "split-rows" } ?? mode?.rawValue ?? "adaptive"
                    let records = try await runOnce(mode: mode, parts: parts, scenario: played, on: testbed, profiles: profiles, test: test)
                    let report = HarnessReport(scenario: played, run: name, records: records, link: "a1")
                    try report.csv.write(toFile: "\(folder)/\(name).csv", atomically: true, encoding: String.Encoding.utf8)
                    try report.svg.write(toFile: "\(folder)/\(name).svg", atomically: true, encoding: String.Encoding.utf8)
                    reports.append(report)
                    log("\(name): wrote \(folder)/\(name).csv and .svg")
                }
                return reports
            }
        } catch TestbedError.interrupted {
            log("\(TestbedError.interrupted)")
            throw ExitCode(130)
        }
        print(HarnessReport.summaryHeader)
        for report in reports { print(report.summaryLine) }
        let table = HarnessComparison(scenario: played, reports: reports, settle: 5 * timeScale, lostPenalty: timeout * 1000)
        print("")
        print(table.markdown, terminator: "")
        if reports.contains(where: { $0.run == "adaptive" }) { print("adaptive: \(table.verdict)") }
        if let comparison {
            let text =
                "\n### \(played.name)\n\n\(played.description)\n\n" + table.markdown
                + (reports.contains { $0.run == "adaptive" } ? "\nAdaptive: \(table.verdict).\n" : "")
            if let handle = FileHandle(forWritingAtPath: comparison) {
                handle.seekToEndOfFile()
                handle.write(Data(text.utf8))
                try handle.close()
            } else {
                try text.write(toFile: comparison, atomically: true, encoding: .utf8)
            }
        }
    }

    /// One run, fixed (`mode`) or adaptive (nil): fresh agents behind fresh proxies a1, a2, …,
    /// the scenario's timeline and the request streams; the agents are removed afterwards.
    private func runOnce(
        mode: InferenceMode?, parts: PatchStreaming?, scenario: Scenario, on testbed: Testbed, profiles: [DeviceProfile], test: FashionMNIST
    ) async throws -> [RequestRecord] {
        for index in 1...agents {
            let profile = profiles[(index - 1) % profiles.count]
            try await testbed.addAgent(
                AgentConfiguration(
                    deviceID: "harness-a\(index)-\(profile.name)", profile: profile, threads: 1,
                    requestTimeout: .milliseconds(Int((mode == nil ? adaptiveTimeout : timeout) * 1000)),
                    modelCache: AgentConfiguration.defaultModelCache, fallbackToLocal: mode == nil, computeEmulation: computeScale,
                    streamPatches: parts),
                proxy: "a\(index)", seed: scenario.seed &+ UInt64(index))
        }
        try await testbed.waitUntilReady()
        log("\(parts.map { "split (one frame per \($0.rawValue))" } ?? mode?.rawValue ?? "adaptive"): \(agents) agents ready; playing the scenario")
        let records = try await testbed.play(
            scenario, rate: rate, mode: mode, input: { index in (test.image(index % test.count), Int(test.labels[index % test.count])) },
            log: { line in FileHandle.standardError.write(Data("\(line)\n".utf8)) })
        await testbed.removeAgents()
        return records
    }

    private func log(_ line: String) {
        FileHandle.standardError.write(Data("harness: \(line)\n".utf8))
    }
}
