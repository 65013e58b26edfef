import CleaveIdentity
import CleaveMQTT
import CleaveProtocol
import FoundationEssentials

/// How an agent reaches the broker and what it runs.
public struct AgentConfiguration: Sendable {
    /// Unique device id (also the MQTT client id).
    public var deviceID: String
    public var profile: DeviceProfile
    public var brokerHost: String
    public var brokerPort: Int
    /// Threads for local model execution (default: the profile's cores).
    public var threads: Int?
    /// How long a remote request waits for its answer (fixed modes; adaptive requests wait at
    /// most this, usually much less: see ``Agent/infer(_:)``).
    public var requestTimeout: Duration
    /// Compute a remote request locally when it has no answer by its deadline, is rejected by
    /// the coordinator or leaves a full offline queue, instead of failing it. The outcome then
    /// says ``AgentOutcome/fallback``.
    public var fallbackToLocal: Bool
    /// Requests that wait while the broker is unreachable; when a new one arrives at a full
    /// queue, the oldest waiting one is failed over (computed locally, or failed without
    /// ``fallbackToLocal``).
    public var offlineQueueLimit: Int
    /// A published request without an answer is published again after this, doubling up to
    /// eight times (the coordinator answers repeats from its result cache).
    public var retryInterval: Duration
    /// Seconds the broker keeps the agent's MQTT session (subscriptions, and answers that
    /// arrive while it is disconnected) after the connection drops; nil: clean sessions.
    public var sessionExpiry: Int?
    /// When set, the device part of every request (the whole model for local, the head for split)
    /// takes at least FLOPs / profile GFLOP/s × this factor: the harness emulates a board this
    /// way. Nil: real compute only, and the adaptive policy predicts from the same formula at 1.
    public var computeEmulation: Double?
    /// Broker credentials (the ACL in deploy/ expects username = device id).
    public var username: String?
    public var password: String?
    /// TLS files (the fleet CA, and this device's certificate and key) for a TLS listener.
    public var tls: MQTTConfiguration.TLS?
    /// The fleet's public key: when set, control messages are taken only signed by it, for this
    /// device's topic, and not older than the last one taken (the newest stamp is kept in the
    /// model cache folder, so a restart does not reopen old ones).
    public var fleetKey: FleetPublicKey?
    /// Folder where verified model artifacts are cached by SHA-256 (nil: keep them in memory).
    public var modelCache: String?
    /// Folder of the request journal (``RequestJournal``): remote requests are written there
    /// until resolved, and a new process sends again what a crashed one left (nil: no journal;
    /// a crash loses the requests in flight).
    public var queueDirectory: String?
    /// Send a split request in parts as the head computes them (one frame per patch, or per
    /// row of patches) with a patch plan that ends at the cut; nil sends it whole (``Agent``;
    /// `docs/results.md` has when it pays).
    public var streamPatches: PatchStreaming?

    /// `$XDG_CACHE_HOME/cleave/models`, or `~/.cache/cleave/models`.
    public static var defaultModelCache: String {
        let environment = ProcessInfo.processInfo.environment
        if let cache = environment["XDG_CACHE_HOME"], !cache.isEmpty { return "\(cache)/cleave/models" }
        return "\(environment["HOME"] ?? ".")/.cache/cleave/models"
    }

    /// The `--model-cache` option's meaning: a folder, or nil for "none" (memory only).
    public static func modelCache(option: String) -> String? {
        option == "none" ? nil : option
    }

    public init(
        deviceID: String, profile: DeviceProfile, brokerHost: String = "127.0.0.1", brokerPort: Int = 1883, threads: Int? = nil,
        requestTimeout: Duration = .seconds(10), username: String? = nil, password: String? = nil, modelCache: String? = nil,
        fallbackToLocal: Bool = true, offlineQueueLimit: Int = 64, retryInterval: Duration = .seconds(1), sessionExpiry: Int? = 300,
        computeEmulation: Double? = nil, streamPatches: PatchStreaming? = nil, tls: MQTTConfiguration.TLS? = nil, fleetKey: FleetPublicKey? = nil,
        queueDirectory: String? = nil
    ) {
        self.queueDirectory = queueDirectory
        self.tls = tls
        self.fleetKey = fleetKey
        self.streamPatches = streamPatches
        self.sessionExpiry = sessionExpiry
        self.fallbackToLocal = fallbackToLocal
        self.offlineQueueLimit = max(1, offlineQueueLimit)
        self.retryInterval = retryInterval
        self.computeEmulation = computeEmulation
        self.modelCache = modelCache
        self.username = username
        self.password = password
        self.deviceID = deviceID
        self.profile = profile
        self.brokerHost = brokerHost
        self.brokerPort = brokerPort
        self.threads = threads
        self.requestTimeout = requestTimeout
    }
}

/// How a split request is cut into frames when the head runs patch by patch.
public enum PatchStreaming: String, Sendable, CaseIterable {
    /// One frame per patch, sent as soon as the patch is computed.
    case patch
    /// One frame per row of patches (a full-width band of the cut tensor): fewer, larger
    /// frames, which compress better and carry fewer headers.
    case row
}

/// What happened to one request.
public struct AgentOutcome: Sendable {
    public var requestID: UInt64
    /// The mode that produced the answer (`local` for a fallback).
    public var mode: InferenceMode
    /// The remote mode that was tried first when the answer is a local fallback.
    public var fallback: InferenceMode?
    /// Predicted class, or nil when the request failed.
    public var prediction: Int?
    /// Why it failed.
    public var failure: AgentFailure?
    /// Bytes published for it (the frame), 0 for local.
    public var bytesSent: Int
    /// Time from the call to the answer, in milliseconds.
    public var latencyMilliseconds: Double
    /// How many requests the coordinator batched with this one (1 for local).
    public var batchSize: Int
    /// Why the adaptive policy chose the mode (nil for a fixed mode).
    public var decision: String?
}

extension AgentOutcome {
    /// Why it failed, as a sentence.
    public var error: String? { failure?.description }
}

/// Why a request ended without a prediction: what an application (or the harness) can act on
/// without matching strings.
public enum AgentFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The agent has no assignment (or its models) yet.
    case noAssignment
    /// No answer before the request's deadline, and no local fallback.
    case noAnswer(afterMilliseconds: Double)
    /// The broker was unreachable and the offline queue was full.
    case offlineQueueFull(limit: Int)
    /// The agent stopped while the request waited.
    case stopped
    /// The coordinator answered with an error (a rejected frame, another model).
    case rejected(Rejection)
    /// The device's own computation failed (a corrupt model, a codec error).
    case computation(String)

    init(_ error: any Error) {
        switch error {
        case let failure as RemoteFailure:
            switch failure {
            case .noAnswer(_, let milliseconds): self = .noAnswer(afterMilliseconds: milliseconds)
            case .offlineQueueFull(_, let limit): self = .offlineQueueFull(limit: limit)
            case .stopped: self = .stopped
            }
        default: self = .computation("\(error)")
        }
    }

    public var description: String {
        switch self {
        case .noAssignment: "no assignment yet"
        case .noAnswer(let milliseconds): "no answer within \(Int(milliseconds.rounded())) ms"
        case .offlineQueueFull(let limit): "left the offline queue: it was full (\(limit) requests)"
        case .stopped: "dropped: agent stopped"
        case .rejected(let rejection): "rejected by the coordinator (\(rejection.reason.rawValue)): \(rejection.message)"
        case .computation(let reason): reason
        }
    }
}

/// What an agent has done since it started (for logs, tests and the fault suite).
public struct AgentStatistics: Sendable, Equatable {
    /// Requests served, by the mode that answered them.
    public var answered: [InferenceMode: Int] = [:]
    /// Remote requests computed locally after their deadline or an offline-queue overflow.
    public var fallbacks = 0
    /// Requests that ended with an error (no answer and no fallback, or a failed computation).
    public var failed = 0
    /// Publications repeated because an answer was late or the connection was new.
    public var retries = 0
    /// Answers that found no waiting request (a retry's second answer or one after the
    /// deadline): dropped, never delivered twice.
    public var droppedAnswers = 0
    /// `busy` answers that left their request waiting for a retry (no local fallback).
    public var busy = 0
    /// Times the broker connection was (re)established.
    public var connects = 0
    /// Control messages refused by the fleet key: unsigned, altered, for another device, or
    /// replayed.
    public var refusedControl = 0
    /// Requests a previous process left in the journal, resolved by this one (answers in
    /// `answers.jsonl`).
    public var recovered = 0
}

/// Why an agent could not serve a request.
public struct AgentError: Error, Sendable, CustomStringConvertible {
    public let description: String
}
