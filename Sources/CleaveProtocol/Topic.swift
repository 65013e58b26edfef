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
    /// Retained JSON `FederatedTask` of federated run `run`: what its clients train and how.
    case federatedTask(run: String)
    /// Retained model frame of run `run`: the global model, its version and the clients asked to train on it.
    case federatedModel(run: String)
    /// Retained JSON `ClientAnnouncement` of a federated client; its will flips it to offline.
    case federatedClient(run: String, device: String)
    /// A federated client's update frames (QoS 1).
    case federatedUpdate(run: String, device: String)

    /// Prefix of every Cleave topic.
    public static let prefix = "cleave/v1"
    /// Subscription to every LLM shard worker's announcement.
    public static let allLLMWorkers = "\(prefix)/llm/workers/+"
    /// Subscription to every device's state.
    public static let allDeviceStates = "\(prefix)/devices/+/state"
    /// Inference frames, shared among all coordinators so that adding one scales out.
    public static let sharedInfer = "$share/coordinators/\(prefix)/infer/+"
    /// Subscription to every client announcement of federated run `run`.
    public static func allFederatedClients(run: String) -> String { "\(prefix)/fl/\(run)/clients/+" }
    /// Subscription to every update of federated run `run`.
    public static func allFederatedUpdates(run: String) -> String { "\(prefix)/fl/\(run)/updates/+" }
    /// Whether `name` can be a run or device name in a topic (not empty, no `/`, `+` or `#`).
    public static func isValidName(_ name: String) -> Bool { !name.isEmpty && !name.contains(where: { $0 == "/" || $0 == "+" || $0 == "#" }) }
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
        case .federatedTask(let run): "\(Self.prefix)/fl/\(run)/task"
        case .federatedModel(let run): "\(Self.prefix)/fl/\(run)/model"
        case .federatedClient(let run, let device): "\(Self.prefix)/fl/\(run)/clients/\(device)"
        case .federatedUpdate(let run, let device): "\(Self.prefix)/fl/\(run)/updates/\(device)"
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
        if parts[2] == "fl" {
            guard let topic = Self.federated(run: parts[3], rest: Array(parts.dropFirst(4))) else { return nil }
            self = topic
            return
        }
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
        case .federatedClient(_, let device), .federatedUpdate(_, let device): device
        case .model, .llmWorker, .federatedTask, .federatedModel: nil
        }
    }

    private static func federated(run: String, rest: [String]) -> Topic? {
        switch rest.count {
        case 1 where rest[0] == "task": .federatedTask(run: run)
        case 1 where rest[0] == "model": .federatedModel(run: run)
        case 2 where rest[0] == "clients" && isValidName(rest[1]): .federatedClient(run: run, device: rest[1])
        case 2 where rest[0] == "updates" && isValidName(rest[1]): .federatedUpdate(run: run, device: rest[1])
        default: nil
        }
    }
}
