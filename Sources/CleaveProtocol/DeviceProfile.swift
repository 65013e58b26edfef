import CleaveSupport

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

    enum CodingKeys: String, CodingKey, CaseIterable {
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
    public static func load(_ path: String) throws(ProfileError) -> DeviceProfile {
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile(path)
        } catch {
            throw ProfileError(description: "\(path): cannot read: \(error.reason)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw ProfileError(description: "\(path): not UTF-8 text") }
        return try parse(text, source: path)
    }

    /// Parses and checks profile YAML (see ``ProfileYAML`` for the subset); `source` names it in errors.
    public static func parse(_ text: String, source: String) throws(ProfileError) -> DeviceProfile {
        let document = try ProfileYAML(text, source: source)
        var fields = ProfileFields(document: document, source: source)
        let profile = DeviceProfile(
            name: try fields.string(.name), board: try fields.string(.board), cores: try fields.integer(.cores),
            clockMHz: try fields.integer(.clockMHz), ramMiB: try fields.integer(.ramMiB), memoryBudgetMiB: try fields.integer(.memoryBudgetMiB),
            gflops: try fields.number(.gflops), gflopsSource: try fields.string(.gflopsSource), links: try fields.list(.links),
            activationMemoryKiB: try fields.optionalInteger(.activationMemoryKiB))
        try fields.refuseUnknown()
        try profile.validate(fields)
        return profile
    }

    private func validate(_ fields: ProfileFields) throws(ProfileError) {
        let fail = fields.fail
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
}

/// A profile's fields by key, typed, each error naming the file, the line and the field.
private struct ProfileFields {
    typealias Key = DeviceProfile.CodingKeys
    let document: ProfileYAML
    let source: String
    private var used: Set<String> = []

    init(document: ProfileYAML, source: String) {
        self.document = document
        self.source = source
    }

    func fail(_ key: Key, _ reason: String) -> ProfileError {
        let line = document.fields.first { $0.key == key.rawValue }.map { "line \($0.line): " } ?? ""
        return ProfileError(description: "\(source): \(line)field '\(key.rawValue)': \(reason)")
    }

    private mutating func value(_ key: Key) -> ProfileYAML.Value? {
        used.insert(key.rawValue)
        return document.fields.first { $0.key == key.rawValue }?.value
    }

    private mutating func scalar(_ key: Key) throws(ProfileError) -> String {
        switch value(key) {
        case nil: throw ProfileError(description: "\(source): missing field '\(key.rawValue)'")
        case .list: throw fail(key, "expected a single value, got a list")
        case .scalar(let text): return text
        }
    }

    mutating func string(_ key: Key) throws(ProfileError) -> String { try scalar(key) }

    mutating func integer(_ key: Key) throws(ProfileError) -> Int { try wholeNumber(try scalar(key), key) }

    /// An absent field, `null` or `~` is nil.
    mutating func optionalInteger(_ key: Key) throws(ProfileError) -> Int? {
        switch value(key) {
        case nil, .scalar("null"), .scalar("~"): return nil
        case .list: throw fail(key, "expected a single value, got a list")
        case .scalar(let text): return try wholeNumber(text, key)
        }
    }

    private func wholeNumber(_ text: String, _ key: Key) throws(ProfileError) -> Int {
        guard let value = Int(text) else { throw fail(key, "expected a whole number, got '\(text)'") }
        return value
    }

    mutating func number(_ key: Key) throws(ProfileError) -> Double {
        let text = try scalar(key)
        guard let value = Double(text), value.isFinite else { throw fail(key, "expected a number, got '\(text)'") }
        return value
    }

    mutating func list(_ key: Key) throws(ProfileError) -> [String] {
        switch value(key) {
        case nil: throw ProfileError(description: "\(source): missing field '\(key.rawValue)'")
        case .scalar(let text): throw fail(key, "expected a list such as [wifi-2.4ghz], got '\(text)'")
        case .list(let items): return items
        }
    }

    /// A field this version does not know is refused: a misspelt `activation_memory_kib` would
    /// otherwise silently lift the board's budget.
    func refuseUnknown() throws(ProfileError) {
        guard let unknown = document.fields.first(where: { !used.contains($0.key) }) else { return }
        let known = Key.allCases.map(\.rawValue).joined(separator: ", ")
        throw ProfileError(description: "\(source): line \(unknown.line): unknown field '\(unknown.key)' (a profile has \(known))")
    }
}
