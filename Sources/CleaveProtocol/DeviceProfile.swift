import Foundation
import Yams

/// What a board can do: the agent's memory budget and compute speed, and the
/// links it usually has. Loaded from `devices/*.yaml`.
public struct DeviceProfile: Codable, Sendable, Equatable {
    /// Profile name, e.g. `raspberry-pi-4b`.
    public var name: String
    /// Human-readable board name.
    public var board: String
    /// CPU cores the agent may use.
    public var cores: Int
    /// CPU clock, in MHz.
    public var clockMHz: Int
    /// Installed memory, in MiB.
    public var ramMiB: Int
    /// Memory the agent may use for models and activations, in MiB.
    public var memoryBudgetMiB: Int
    /// Activation memory one inference may hold, in KiB (`nil`: no limit). The coordinator's
    /// planner runs the head layer by layer when that fits, else patch by patch, and refuses a
    /// device no plan fits, naming the smallest budget that would do.
    public var activationMemoryKiB: Int?
    /// Sustained float32 compute for CNN kernels, in GFLOP/s.
    public var gflops: Double
    /// Where `gflops` comes from.
    public var gflopsSource: String
    /// Typical links, e.g. `wifi-2.4ghz`, `ethernet-100`, `lte`.
    public var links: [String]

    enum CodingKeys: String, CodingKey {
        case name, board, cores, links, gflops
        case clockMHz = "clock_mhz"
        case ramMiB = "ram_mib"
        case memoryBudgetMiB = "memory_budget_mib"
        case activationMemoryKiB = "activation_memory_kib"
        case gflopsSource = "gflops_source"
    }

    public init(
        name: String, board: String, cores: Int, clockMHz: Int, ramMiB: Int, memoryBudgetMiB: Int, gflops: Double, gflopsSource: String,
        links: [String], activationMemoryKiB: Int? = nil
    ) {
        self.name = name
        self.board = board
        self.cores = cores
        self.clockMHz = clockMHz
        self.ramMiB = ramMiB
        self.memoryBudgetMiB = memoryBudgetMiB
        self.activationMemoryKiB = activationMemoryKiB
        self.gflops = gflops
        self.gflopsSource = gflopsSource
        self.links = links
    }
}

/// A profile file that could not be used, with the file, line and field at fault.
public struct ProfileError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

extension DeviceProfile {
    /// Loads and checks the profile at `path`.
    public static func load(_ path: String) throws -> DeviceProfile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ProfileError(description: "\(path): cannot read: \((error as NSError).localizedDescription)")
        }
        return try parse(text, source: path)
    }

    /// Parses and checks profile YAML; `source` names it in errors.
    public static func parse(_ text: String, source: String) throws -> DeviceProfile {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ProfileError(description: "\(source): not valid YAML: \(error)")
        }
        guard let root, root.mapping != nil else { throw ProfileError(description: "\(source): line 1: expected a mapping of profile fields") }
        let profile: DeviceProfile
        do {
            profile = try YAMLDecoder().decode(DeviceProfile.self, from: text)
        } catch let error as DecodingError {
            throw ProfileError(description: describe(error, root: root, source: source))
        }
        try profile.validate(root: root, source: source)
        return profile
    }

    private func validate(root: Node, source: String) throws {
        func fail(_ key: CodingKeys, _ reason: String) -> ProfileError {
            let line = root.mapping?[Node(key.rawValue)]?.mark.map { "line \($0.line): " } ?? ""
            return ProfileError(description: "\(source): \(line)field '\(key.rawValue)': \(reason)")
        }
        guard cores >= 1 else { throw fail(.cores, "must be at least 1, is \(cores)") }
        guard clockMHz > 0 else { throw fail(.clockMHz, "must be positive, is \(clockMHz)") }
        guard ramMiB > 0 else { throw fail(.ramMiB, "must be positive, is \(ramMiB)") }
        guard memoryBudgetMiB > 0, memoryBudgetMiB <= ramMiB else {
            throw fail(.memoryBudgetMiB, "must be between 1 and ram_mib (\(ramMiB)), is \(memoryBudgetMiB)")
        }
        if let activationMemoryKiB, activationMemoryKiB <= 0 || activationMemoryKiB > memoryBudgetMiB * 1024 {
            throw fail(.activationMemoryKiB, "must be between 1 and memory_budget_mib × 1024 (\(memoryBudgetMiB * 1024)), is \(activationMemoryKiB)")
        }
        guard gflops > 0, gflops.isFinite else { throw fail(.gflops, "must be a positive number, is \(gflops)") }
    }

    private static func describe(_ error: DecodingError, root: Node, source: String) -> String {
        func locate(_ path: [CodingKey]) -> String {
            var node: Node? = root
            for key in path { node = node?.mapping?[Node(key.stringValue)] ?? key.intValue.flatMap { node?.sequence?[$0] } }
            return (node ?? root).mark.map { "line \($0.line): " } ?? ""
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(source): \(locate(context.codingPath))missing field '\(key.stringValue)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "\(source): \(locate(context.codingPath))field '\(field)': \(context.debugDescription)"
        @unknown default:
            return "\(source): \(error)"
        }
    }
}
