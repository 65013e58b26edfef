/// Every MQTT topic of the Cleave protocol (version 1), formatted and parsed in this one
/// place: `cleave/v1/…` appears nowhere else.
public enum Topic: Sendable, Hashable, CustomStringConvertible {
    /// Retained JSON ``DeviceState`` of a device; its will flips it to offline.
    case deviceState(device: String)
    /// Coordinator → device commands (retained JSON ``ControlMessage``).
    case deviceControl(device: String)
    /// Where a device's results arrive (the MQTT v5 response topic of its requests).
    case results(device: String)
    /// Device → coordinator feature frames.
    case infer(device: String)
    /// Retained model artifact, addressed by the hex SHA-256 of its bytes.
    case model(sha256: String)
    /// Retained JSON ``LLMWorkerAnnouncement`` of a tensor-parallel shard worker; its will
    /// flips it to offline.
    case llmWorker(id: String)

    /// Prefix of every Cleave topic.
    public static let prefix = "cleave/v1"
    /// Subscription to every LLM shard worker's announcement.
    public static let allLLMWorkers = "\(prefix)/llm/workers/+"
    /// Subscription to every device's state.
    public static let allDeviceStates = "\(prefix)/devices/+/state"
    /// Inference frames, shared among all coordinators so that adding one scales out.
    public static let sharedInfer = "$share/coordinators/\(prefix)/infer/+"
    /// MQTT v5 user property naming what a frame carries: `split` (head features) or `offload` (the input).
    public static let modeProperty = "mode"

    /// The topic as published.
    public var path: String {
        switch self {
        case .deviceState(let device): "\(Self.prefix)/devices/\(device)/state"
        case .deviceControl(let device): "\(Self.prefix)/devices/\(device)/control"
        case .results(let device): "\(Self.prefix)/devices/\(device)/results"
        case .infer(let device): "\(Self.prefix)/infer/\(device)"
        case .model(let sha256): "\(Self.prefix)/models/\(sha256)"
        case .llmWorker(let id): "\(Self.prefix)/llm/workers/\(id)"
        }
    }

    public var description: String { path }

    /// The topic `path` names, or nil for anything that is not a Cleave v1 topic (a device id
    /// or hash with a `/`, `+` or `#` in it cannot be one).
    public init?(parsing path: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 4, parts[0] == "cleave", parts[1] == "v1", !parts[3].isEmpty,
            !parts[3].contains(where: { $0 == "+" || $0 == "#" })
        else { return nil }
        switch (parts[2], parts.count, parts.count == 5 ? parts[4] : "") {
        case ("llm", 5, let id) where parts[3] == "workers" && !id.isEmpty && !id.contains(where: { $0 == "+" || $0 == "#" }):
            self = .llmWorker(id: id)
        case ("infer", 4, _): self = .infer(device: parts[3])
        case ("models", 4, _): self = .model(sha256: parts[3])
        case ("devices", 5, "state"): self = .deviceState(device: parts[3])
        case ("devices", 5, "control"): self = .deviceControl(device: parts[3])
        case ("devices", 5, "results"): self = .results(device: parts[3])
        default: return nil
        }
    }

    /// The device a device topic belongs to (nil for model topics).
    public var device: String? {
        switch self {
        case .deviceState(let device), .deviceControl(let device), .results(let device), .infer(let device): device
        case .model, .llmWorker: nil
        }
    }
}
