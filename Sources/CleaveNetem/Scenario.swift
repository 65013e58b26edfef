import Foundation
import Yams

/// A timeline of link conditions per agent, read from a YAML scenario file.
///
/// ```yaml
/// name: commute
/// description: Wi-Fi at home, 3G on the bus, a tunnel, LTE in town.
/// seed: 1
/// duration: 120s
/// links:
///   default:            # every agent without its own timeline
///     - at: 0s
///       rate: 20mbit    # both directions; uplink_rate / downlink_rate for one
///       latency: 10ms
///       jitter: 2ms
///     - at: 30s
///       rate: 1mbit
///       loss: 1%
///     - at: 60s
///       down: hold      # or refuse
///     - at: 90s
///       up: true
/// ```
///
/// Each step changes only the fields it names; `at` must grow from step to step.
/// Fields: `rate`, `uplink_rate`, `downlink_rate`, `burst` (bytes), `latency`, `jitter`,
/// `loss`, `burst_loss` (`{enter_bad, leave_bad, loss_good, loss_bad}`, Gilbert–Elliott),
/// `retransmit_delay`, `trace` / `uplink_trace` / `downlink_trace` (Mahimahi files, relative
/// to the scenario), `unlimited: true` (no rate limit), `down: hold|refuse`, `up: true`.
public struct Scenario: Sendable {
    /// The conditions of one link from `at` (milliseconds after the start) on.
    public struct Step: Sendable, Equatable {
        public var at: Double
        public var uplink: LinkConditions
        public var downlink: LinkConditions
        public var uplinkTrace: DeliveryTrace?
        public var downlinkTrace: DeliveryTrace?
    }

    public let name: String
    public let description: String
    public let seed: UInt64
    /// Milliseconds.
    public let duration: Double
    /// Steps per link name (`default` for links without their own).
    public let timelines: [String: [Step]]

    /// The timeline of link `name`.
    public func timeline(for name: String) -> [Step] { timelines[name] ?? timelines["default"] ?? [] }

    /// The conditions in force `time` milliseconds after the start.
    public func step(for name: String, at time: Double) -> Step? {
        timeline(for: name).last { $0.at <= time }
    }

    /// The same scenario with every time multiplied by `factor` (0.25: four times faster).
    public func scaled(by factor: Double) -> Scenario {
        Scenario(
            name: name, description: description, seed: seed, duration: duration * factor,
            timelines: timelines.mapValues { steps in
                steps.map { step in
                    var scaled = step
                    scaled.at = step.at * factor
                    return scaled
                }
            })
    }

    public static func load(_ path: String) throws -> Scenario {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("\(path): cannot read the file")
        }
        return try parse(String(decoding: data, as: UTF8.self), source: path, directory: (path as NSString).deletingLastPathComponent)
    }

    /// Parses scenario text; errors name the source, the line and the field.
    public static func parse(_ text: String, source: String, directory: String = ".") throws -> Scenario {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ScenarioError("\(source): not valid YAML: \(error)")
        }
        guard let mapping = root?.mapping else { throw ScenarioError("\(source): line 1: expected a mapping with 'name' and 'links'") }
        let reader = FieldReader(source: source)
        let known: Set<String> = ["name", "description", "seed", "duration", "links"]
        try reader.refuseUnknown(mapping, known, context: "scenario")
        let name = try reader.string(mapping, "name", required: true)!
        let description = try reader.string(mapping, "description") ?? ""
        let seed = try reader.integer(mapping, "seed") ?? 1
        let duration = try reader.duration(mapping, "duration", required: true)!
        guard let linksNode = mapping[Node("links")] else { throw reader.missing("links", in: root!) }
        guard let links = linksNode.mapping, !links.isEmpty else {
            throw reader.fail(linksNode, "links", "must map link names (or 'default') to lists of steps")
        }
        var timelines: [String: [Step]] = [:]
        for (key, value) in links {
            guard let link = key.string else { throw reader.fail(key, "links", "link names must be strings") }
            timelines[link] = try parseTimeline(value, link: link, reader: reader, directory: directory)
        }
        return Scenario(name: name, description: description, seed: UInt64(max(0, seed)), duration: duration, timelines: timelines)
    }

    private static let stepFields: Set<String> = [
        "at", "rate", "uplink_rate", "downlink_rate", "burst", "latency", "jitter", "loss", "burst_loss", "retransmit_delay",
        "trace", "uplink_trace", "downlink_trace", "unlimited", "down", "up",
    ]

    private static func parseTimeline(_ node: Node, link: String, reader: FieldReader, directory: String) throws -> [Step] {
        guard let items = node.sequence, !items.isEmpty else {
            throw reader.fail(node, "links.\(link)", "must be a list of steps, each with 'at'")
        }
        var steps: [Step] = []
        var current = Step(at: 0, uplink: LinkConditions(), downlink: LinkConditions())
        for item in items {
            guard let step = item.mapping else { throw reader.fail(item, "links.\(link)", "each step must be a mapping with 'at'") }
            try reader.refuseUnknown(step, stepFields, context: "links.\(link)")
            let at = try reader.duration(step, "at", required: true)!
            if let previous = steps.last, at <= previous.at {
                throw reader.fail(step[Node("at")]!, "at", "\(at) ms does not come after the previous step's \(previous.at) ms")
            }
            current.at = at
            if let rate = try reader.rate(step, "rate") {
                current.uplink.rate = rate
                current.downlink.rate = rate
            }
            if try reader.bool(step, "unlimited") == true {
                current.uplink.rate = nil
                current.downlink.rate = nil
            }
            if let rate = try reader.rate(step, "uplink_rate") { current.uplink.rate = rate }
            if let rate = try reader.rate(step, "downlink_rate") { current.downlink.rate = rate }
            if let burst = try reader.integer(step, "burst") { (current.uplink.burstBytes, current.downlink.burstBytes) = (burst, burst) }
            if let latency = try reader.duration(step, "latency") { (current.uplink.latency, current.downlink.latency) = (latency, latency) }
            if let jitter = try reader.duration(step, "jitter") { (current.uplink.jitter, current.downlink.jitter) = (jitter, jitter) }
            if let delay = try reader.duration(step, "retransmit_delay") {
                (current.uplink.retransmitDelay, current.downlink.retransmitDelay) = (delay, delay)
            }
            if let loss = try reader.probability(step, "loss") {
                (current.uplink.loss, current.downlink.loss) = (loss == 0 ? .none : .random(loss), loss == 0 ? .none : .random(loss))
            }
            if let node = step[Node("burst_loss")] {
                let loss = try reader.gilbertElliott(node)
                (current.uplink.loss, current.downlink.loss) = (loss, loss)
            }
            for (field, keyPaths) in [
                ("trace", [\Step.uplinkTrace, \Step.downlinkTrace]), ("uplink_trace", [\Step.uplinkTrace]), ("downlink_trace", [\Step.downlinkTrace]),
            ] {
                guard let node = step[Node(field)] else { continue }
                guard let file = node.string else { throw reader.fail(node, field, "must be a file name") }
                let path = file.hasPrefix("/") ? file : (directory as NSString).appendingPathComponent(file)
                guard let data = FileManager.default.contents(atPath: path) else { throw reader.fail(node, field, "cannot read \(path)") }
                let trace = try DeliveryTrace(text: String(decoding: data, as: UTF8.self), name: path)
                for keyPath in keyPaths { current[keyPath: keyPath] = trace }
            }
            if let node = step[Node("down")] {
                guard let outage = node.string.flatMap(LinkConditions.Outage.init(rawValue:)) else {
                    throw reader.fail(node, "down", "must be 'hold' or 'refuse'")
                }
                (current.uplink.up, current.downlink.up) = (false, false)
                (current.uplink.outage, current.downlink.outage) = (outage, outage)
            }
            if try reader.bool(step, "up") == true { (current.uplink.up, current.downlink.up) = (true, true) }
            do {
                try current.uplink.validate()
                try current.downlink.validate()
            } catch let error as NetemError {
                throw reader.fail(item, "links.\(link)", error.description)
            }
            steps.append(current)
        }
        return steps
    }
}

/// A scenario or trace that cannot be used, with file, line and field.
public struct ScenarioError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Reads typed fields from YAML nodes, failing with the node's line.
private struct FieldReader {
    let source: String

    func fail(_ node: Node, _ field: String, _ reason: String) -> ScenarioError {
        ScenarioError("\(source): \(node.mark.map { "line \($0.line): " } ?? "")field '\(field)': \(reason)")
    }

    func missing(_ field: String, in node: Node) -> ScenarioError {
        ScenarioError("\(source): \(node.mark.map { "line \($0.line): " } ?? "")missing field '\(field)'")
    }

    func refuseUnknown(_ mapping: Node.Mapping, _ known: Set<String>, context: String) throws {
        for key in mapping.keys {
            guard let name = key.string, known.contains(name) else {
                throw fail(key, key.string ?? "?", "unknown in \(context); known: \(known.sorted().joined(separator: ", "))")
            }
        }
    }

    private func scalar(_ mapping: Node.Mapping, _ field: String, required: Bool) throws -> (Node, String)? {
        guard let node = mapping[Node(field)] else {
            if required { throw ScenarioError("\(source): missing field '\(field)'") }
            return nil
        }
        guard let text = node.scalar?.string else { throw fail(node, field, "must be a single value") }
        return (node, text)
    }

    func string(_ mapping: Node.Mapping, _ field: String, required: Bool = false) throws -> String? {
        try scalar(mapping, field, required: required)?.1
    }

    func integer(_ mapping: Node.Mapping, _ field: String) throws -> Int? {
        guard let (node, text) = try scalar(mapping, field, required: false) else { return nil }
        guard let value = Int(text) else { throw fail(node, field, "'\(text)' is not a whole number") }
        return value
    }

    func bool(_ mapping: Node.Mapping, _ field: String) throws -> Bool? {
        guard let (node, text) = try scalar(mapping, field, required: false) else { return nil }
        guard let value = Bool(text.lowercased()) else { throw fail(node, field, "'\(text)' is not true or false") }
        return value
    }

    private func converted<T>(_ mapping: Node.Mapping, _ field: String, required: Bool, _ parse: (String) throws -> T) throws -> T? {
        guard let (node, text) = try scalar(mapping, field, required: required) else { return nil }
        do {
            return try parse(text)
        } catch let error as NetemError {
            throw fail(node, field, error.description)
        }
    }

    func duration(_ mapping: Node.Mapping, _ field: String, required: Bool = false) throws -> Double? {
        try converted(mapping, field, required: required, LinkConditions.parseDuration)
    }

    func rate(_ mapping: Node.Mapping, _ field: String) throws -> Double? {
        try converted(mapping, field, required: false, LinkConditions.parseRate)
    }

    func probability(_ mapping: Node.Mapping, _ field: String) throws -> Double? {
        try converted(mapping, field, required: false, LinkConditions.parseProbability)
    }

    func gilbertElliott(_ node: Node) throws -> LinkConditions.Loss {
        guard let mapping = node.mapping else {
            throw fail(node, "burst_loss", "must be a mapping of enter_bad, leave_bad, loss_good, loss_bad")
        }
        let fields = ["enter_bad", "leave_bad", "loss_good", "loss_bad"]
        try refuseUnknown(mapping, Set(fields), context: "burst_loss")
        var values: [Double] = []
        for field in fields {
            guard let value = try probability(mapping, field) else { throw fail(node, "burst_loss", "missing '\(field)'") }
            values.append(value)
        }
        return .gilbertElliott(enterBad: values[0], leaveBad: values[1], lossGood: values[2], lossBad: values[3])
    }
}
