import ArgumentParser
import CleaveDatasets
import CleaveONNX
import CleaveSupport
import CleaveTensor
import CleaveTrain
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Inspect, split, run and benchmark ONNX models.",
        subcommands: [Inspect.self, Split.self, Plan.self, Run.self, Bench.self, Eval.self])
}

/// `--shape name=1x3x224x224` options shared by the model commands.
struct ShapeOptions: ParsableArguments {
    @Option(
        name: .customLong("shape"),
        help: ArgumentHelp(
            "Fix an input's shape, as NAME=DxDx… (repeatable). Symbolic dimensions default to 1.", valueName: "name=shape"))
    var shapes: [String] = []

    func types(for session: InferenceSession) throws -> [String: TensorType] {
        var types = try session.declaredInputTypes()
        for entry in shapes {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let current = types[parts[0]] else {
                throw ValidationError("--shape \(entry): expected NAME=DxD… with NAME one of \(types.keys.sorted())")
            }
            let dimensions = parts[1].split(separator: "x").compactMap { Int($0) }
            guard dimensions.count == parts[1].split(separator: "x").count, dimensions.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--shape \(entry): dimensions must be positive integers separated by 'x'")
            }
            types[parts[0]] = TensorType(dimensions, current.dtype)
        }
        return types
    }
}

func formatBytes(_ bytes: Int) -> String {
    if bytes >= 1 << 20 { return String(format: "%.2f MiB", Double(bytes) / Double(1 << 20)) }
    if bytes >= 1 << 10 { return String(format: "%.1f KiB", Double(bytes) / 1024) }
    return "\(bytes) B"
}

func formatCount(_ value: Int) -> String {
    if value >= 1_000_000_000 { return String(format: "%.2f G", Double(value) / 1e9) }
    if value >= 1_000_000 { return String(format: "%.2f M", Double(value) / 1e6) }
    if value >= 1_000 { return String(format: "%.1f k", Double(value) / 1e3) }
    return "\(value)"
}

// MARK: - inspect

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's inputs, outputs, operators, size, FLOPs, planned memory and cut points.")

    @Argument(help: "The .onnx file.") var model: String
    @OptionGroup var shape: ShapeOptions

    func run() throws {
        let session = try InferenceSession(contentsOf: model, threads: 1)
        let summary = try ModelSummary(session: session, types: shape.types(for: session))
        print("model      \(model)  (opset \(session.model.opset)\(session.model.producer.isEmpty ? "" : ", from \(session.model.producer)"))")
        for (name, type) in summary.inputs { print("input      \(name)  \(type)") }
        for (name, type) in summary.outputs { print("output     \(name)  \(type)") }
        print("operators  " + summary.operators.map { "\($0.0)×\($0.1)" }.joined(separator: " "))
        print(
            "executed   " + session.executedOperatorCounts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
                + "  (\(session.foldedBatchNorms) BatchNormalization folded, \(session.fusedActivations) activations fused, \(session.fusedResiduals) Adds fused, \(session.winogradConvolutions) Winograd)"
        )
        print("parameters \(formatCount(summary.parameters))")
        print("FLOPs      \(formatCount(summary.flops))")
        print(
            "arena      \(formatBytes(summary.arenaBytes)) planned, \(formatBytes(summary.peakLiveBytes)) peak live (lower bound), ratio \(String(format: "%.3f", Double(summary.arenaBytes) / Double(max(summary.peakLiveBytes, 1))))"
        )
        print("cuts       \(summary.cuts.count) candidate tensors (tensor, type, bytes as float32, head share of FLOPs):")
        for cut in summary.cuts {
            print("  \(cut.tensor)  \(cut.type)  \(formatBytes(cut.type.byteCount))  \(String(format: "%.1f%%", cut.headFLOPShare * 100))")
        }
    }
}

// MARK: - split

struct Split: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut a model at a tensor into a head model and a tail model.",
        discussion:
            "The head computes the tensor from the model's inputs; the tail computes the outputs from it. A cut that other branches cross is refused with the crossing tensors named."
    )

    @Argument(help: "The .onnx file.") var model: String
    @Option(help: "Name of the tensor to cut at (see `cleave model inspect`).") var at: String
    @Option(help: "Where to write the head model.") var head: String
    @Option(help: "Where to write the tail model.") var tail: String
    @OptionGroup var shape: ShapeOptions

    func run() throws {
        // Unfused: the cut tensor may sit between nodes that fusion would merge.
        let session = try InferenceSession(contentsOf: model, threads: 1, optimize: false)
        let plan = try session.plan(for: shape.types(for: session))
        let cut = try GraphCut(model: session.model, at: at)
        guard let type = plan.types[at] else { throw ValidationError("no type could be inferred for '\(at)'") }
        let (headData, tailData) = try cut.serializedModels(of: session.model, cutType: type)
        try headData.write(to: URL(fileURLWithPath: head))
        try tailData.write(to: URL(fileURLWithPath: tail))
        print("head \(head): \(cut.headNodes.count) nodes → \(at) \(type)")
        print("tail \(tail): \(cut.tailNodes.count) nodes")
    }
}

// MARK: - run

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model on inputs from .npy or TensorProto .pb files; write one .npy per output.")

    @Argument(help: "The .onnx file.") var model: String
    @Option(name: .customLong("input"), help: ArgumentHelp("An input as NAME=FILE (.npy or .pb); repeatable.", valueName: "name=file"))
    var inputs: [String] = []
    @Option(help: "Folder for the outputs (created if missing).") var outputDir: String
    @Option(help: "Threads per operator (default: one per core).") var threads: Int?
    @Flag(inversion: .prefixedNo, help: "Fold BatchNormalization into convolutions and fuse activations (--no-optimize: the graph as written).")
    var optimize = true
    @OptionGroup var patching: PatchOptions

    func run() throws {
        let session = try InferenceSession(contentsOf: model, threads: threads, optimize: optimize)
        var tensors: [String: Tensor] = [:]
        for entry in inputs {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--input \(entry): expected NAME=FILE") }
            tensors[parts[0]] = try TensorFile.read(parts[1]).tensor
        }
        let outputs: [String: Tensor]
        if let plan = try patching.plan(session, types: tensors.mapValues { TensorType($0.shape, $0.dtype) }) {
            printPatchPlan(plan)
            outputs = try plan.run(tensors, pool: session.pool, workspace: PatchWorkspace())
        } else {
            outputs = try session.run(tensors)
        }
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        for output in session.model.graph.outputs {
            guard let tensor = outputs[output.name] else { continue }
            let safe = output.name.map { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." ? $0 : "_" }
            let path = "\(outputDir)/\(String(safe)).npy"
            try TensorFile.writeNPY(tensor, to: path)
            print("\(output.name)  \(tensor.dtype)\(tensor.shape)  → \(path)")
        }
    }
}

/// One line on stderr saying which patch plan runs.
func printPatchPlan(_ plan: PatchPlan) {
    FileHandle.standardError.write(
        Data(
            ("patch plan: stage ends at '\(plan.stageEnd)', grid \(plan.grid), peak \(formatBytes(plan.peakBytes)), "
                + String(format: "%+.2f%% multiply-adds\n", plan.extraMultiplyAddShare * 100)).utf8))
}

// MARK: - bench

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a model on random inputs; print one JSON line.",
        discussion:
            "Prints median_ms, p90_ms, arena_bytes, the planned and held activation bytes (layer by layer, or the --patch plan's), peak_rss_bytes (the process's high-water resident memory) and runs_rss_growth_bytes (what the runs added to the resident set after loading and planning; -1 where Linux's /proc/self/clear_refs is unavailable)."
    )

    @Argument(help: "The .onnx file.") var model: String
    @Option(help: "Threads per operator.") var threads: Int = 1
    @Option(help: "Timed runs.") var runs: Int = 20
    @Option(help: "Untimed runs before timing.") var warmup: Int = 3
    @Option(help: "Keep warming up (untimed) for at least this many seconds: a fresh process's first runs of a small model are slower.")
    var warmupSeconds: Double = 0
    @Flag(help: "Also print the time per operator type and the slowest nodes, with their share of the total.") var profile = false
    @Option(help: "With --profile, how many of the slowest nodes to list (0: all).") var nodes: Int = 10
    @Flag(
        inversion: .prefixedNo,
        help: "Fold BatchNormalization into convolutions and fuse activations (the default; --no-optimize runs the graph as written).")
    var optimize = true
    @OptionGroup var shape: ShapeOptions
    @OptionGroup var patching: PatchOptions

    func run() throws {
        guard runs > 0, warmup >= 0, threads > 0 else { throw ValidationError("--runs and --threads must be positive") }
        guard nodes >= 0 else { throw ValidationError("--nodes must be 0 (all) or more") }
        guard warmupSeconds >= 0 else { throw ValidationError("--warmup-seconds must not be negative") }
        let session = try InferenceSession(contentsOf: model, threads: threads, optimize: optimize)
        let types = try shape.types(for: session)
        var generator = SystemRandomNumberGenerator()
        var inputs: [String: Tensor] = [:]
        for (name, type) in types {
            guard type.dtype == .float32 else { throw ValidationError("input \(name) is \(type.dtype); bench makes float32 inputs only") }
            inputs[name] = Tensor(shape: type.shape, scalars: (0..<type.shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &generator) })
        }
        let plan = try session.plan(for: types)
        let patchPlan = try patching.plan(session, types: types)
        let workspace = PatchWorkspace()
        // Layer by layer, or patch by patch when --patch asks for it.
        func runOnce() throws {
            if let patchPlan {
                _ = try patchPlan.run(inputs, pool: session.pool, workspace: workspace)
            } else {
                _ = try session.run(inputs)
            }
        }
        // What the runs add to the resident set: the high-water mark is reset after loading and
        // planning (Linux's clear_refs), so that loading's own peak does not hide the runs'.
        let residentBeforeRuns = resetPeakResident()
        let warmupStart = ContinuousClock.now
        var warmed = 0
        while warmed < warmup || ContinuousClock.now - warmupStart < .milliseconds(Int(warmupSeconds * 1000)) {
            try runOnce()
            warmed += 1
        }
        var times: [Double] = []
        for _ in 0..<runs {
            let start = ContinuousClock.now
            try runOnce()
            let elapsed = ContinuousClock.now - start
            times.append(elapsed.milliseconds)
        }
        let statistics = SampleStatistics(times)
        let median = statistics.median
        let p90 = statistics.percentile(0.9)
        let inputBytes = types.values.reduce(0) { $0 + $1.byteCount }
        // Activation memory: planned, and held by the run's workspace after the runs (its high-water mark).
        let planned = patchPlan?.peakBytes ?? inputBytes + plan.arenaBytes
        let held = inputBytes + (patchPlan == nil ? plan.arenaBytes : workspace.byteCount)
        let patchFields =
            patchPlan.map { "\"patch\": \"\($0.grid)\", \"stage_end\": \"\($0.stageEnd)\", \"multiply_adds\": \($0.multiplyAdds), " }
            ?? "\"patch\": null, "
        print(
            String(
                format:
                    "{\"model\": \"%@\", \"threads\": %d, \"runs\": %d, \"median_ms\": %.3f, \"p90_ms\": %.3f, \"arena_bytes\": %d, %@\"planned_activation_bytes\": %d, \"held_activation_bytes\": %d, \"peak_rss_bytes\": %d, \"runs_rss_growth_bytes\": %d}",
                model, threads, runs, median, p90, plan.arenaBytes, patchFields, planned, held, peakResidentBytes(),
                residentBeforeRuns.map { peakResidentBytes() - $0 } ?? -1))
        if profile { try printProfile(session, inputs) }
    }

    /// Per-operator and per-node shares of the run time.
    func printProfile(_ session: InferenceSession, _ inputs: [String: Tensor]) throws {
        let timings = try session.profile(inputs, runs: runs)
        let total = max(timings.reduce(0) { $0 + $1.milliseconds }, 1e-9)
        var byOperator: [String: (Double, Int)] = [:]
        for timing in timings {
            let current = byOperator[timing.opType] ?? (0, 0)
            byOperator[timing.opType] = (current.0 + timing.milliseconds, current.1 + 1)
        }
        print("operator            nodes  ms/run    share")
        for (op, value) in byOperator.sorted(by: { $0.value.0 > $1.value.0 }) {
            print(
                op.padding(toLength: 18, withPad: " ", startingAt: 0)
                    + String(format: "  %5d  %7.3f  %6.1f%%", value.1, value.0 / Double(runs), value.0 / total * 100))
        }
        print("slowest nodes")
        for timing in timings.sorted(by: { $0.milliseconds > $1.milliseconds }).prefix(nodes == 0 ? timings.count : nodes) {
            print(
                "  \(timing.node) (\(timing.opType))"
                    + String(format: "  %.3f ms/run  %.1f%%", timing.milliseconds / Double(runs), timing.milliseconds / total * 100))
        }
    }

    /// Resets the peak resident set to the current one and returns it (nil where Linux's
    /// `/proc/self/clear_refs` is not writable).
    func resetPeakResident() -> Int? {
        guard FileManager.default.isWritableFile(atPath: "/proc/self/clear_refs"),
            (try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)) != nil
        else { return nil }
        return statusBytes("VmRSS:")
    }

    /// The process's peak resident set (VmHWM), in bytes; 0 where /proc is unavailable.
    func peakResidentBytes() -> Int { statusBytes("VmHWM:") }

    func statusBytes(_ field: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return kilobytes * 1024
    }
}

// MARK: - eval

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a classifier's accuracy on a data set.",
        discussion: "The model takes [N, 1, 28, 28] float32 images scaled to 0–1 and returns one score per class.")

    @Argument(help: "The .onnx file.") var model: String
    @Option(help: "Data set: fmnist-test or fmnist-train.") var dataset: String = "fmnist-test"
    @Option(help: "Fashion-MNIST folder.") var datasetDirectory: String = FashionMNIST.defaultDirectory
    @Option(help: "Evaluate only the first N samples.") var limit: Int?
    @Option(help: "Threads.") var threads: Int = 2
    @Option(help: "Write the predicted class of every sample to this file, one per line.") var predictions: String?

    func run() throws {
        let split: FashionMNIST.Split
        switch dataset {
        case "fmnist-test": split = .test
        case "fmnist-train": split = .train
        default: throw ValidationError("--dataset must be fmnist-test or fmnist-train, not '\(dataset)'")
        }
        let data = try FashionMNIST(split: split, directory: datasetDirectory)
        let session = try InferenceSession(contentsOf: model, threads: threads)
        guard let input = session.model.graph.inputs.first?.name else { throw ValidationError("\(model) has no inputs") }
        let count = min(limit ?? data.count, data.count)
        var correct = 0
        var predicted: [Int] = []
        var bar = ProgressBar("eval", total: count)
        for start in stride(from: 0, to: count, by: 250) {
            let size = min(250, count - start)
            let images = Tensor(shape: [size, 1, 28, 28], scalars: data.pixels[(start * 784)..<((start + size) * 784)].map { Float($0) / 255 })
            guard let scores = try session.run([input: images]).values.first, scores.count == size * 10 else {
                throw ValidationError("\(model) must output 10 scores per image")
            }
            let values = scores.scalars(as: Float.self)
            for sample in 0..<size {
                let row = values[(sample * 10)..<((sample + 1) * 10)]
                let label = Classification.argmax(row)!
                predicted.append(label)
                if label == Int(data.labels[start + sample]) { correct += 1 }
            }
            bar.update(start + size)
        }
        bar.finish("\(count) samples")
        if let predictions {
            try predicted.map(String.init).joined(separator: "\n").appending("\n").write(toFile: predictions, atomically: true, encoding: .utf8)
        }
        print(String(format: "accuracy %.2f%% (%d/%d) on %@", Double(correct) / Double(count) * 100, correct, count, dataset))
    }
}
