import CleaveCodec
import CleaveMQTT
import CleaveONNX
import CleaveProtocol
import CleaveTensor
import Foundation
import Logging

/// How an agent reaches the broker and what it runs.
public struct AgentConfiguration: Sendable {
    /// Unique device id (also the MQTT client id).
    public var deviceID: String
    public var profile: DeviceProfile
    public var brokerHost: String
    public var brokerPort: Int
    /// Threads for local model execution (default: the profile's cores).
    public var threads: Int?
    /// How long to wait for a remote answer before giving up on a request.
    public var requestTimeout: Duration
    /// Broker credentials (the ACL in deploy/ expects username = device id).
    public var username: String?
    public var password: String?
    /// Folder where verified model artifacts are cached by SHA-256 (nil: keep them in memory).
    public var modelCache: String?

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
        requestTimeout: Duration = .seconds(10), username: String? = nil, password: String? = nil, modelCache: String? = nil
    ) {
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

/// What happened to one request.
public struct AgentOutcome: Sendable {
    public var requestID: UInt64
    public var mode: InferenceMode
    /// Predicted class, or nil when the request failed.
    public var prediction: Int?
    /// Why it failed.
    public var error: String?
    /// Bytes published for it (the frame), 0 for local.
    public var bytesSent: Int
    /// Time from the call to the answer, in milliseconds.
    public var latencyMilliseconds: Double
    /// How many requests the coordinator batched with this one (1 for local).
    public var batchSize: Int
}

/// Why an agent could not serve a request.
public struct AgentError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// The device agent: announces itself, takes its assignment, fetches and verifies
/// the models, and serves requests locally, split or offloaded.
///
/// Follow one image: ``infer(_:mode:)`` runs the head, encodes the cut tensor as a
/// feature frame, publishes it on `infer/{id}` with a response topic and the
/// request id as correlation data, and resumes when the result arrives on
/// `devices/{id}/results`.
public actor Agent {
    public let configuration: AgentConfiguration
    private let client: MQTTClient
    private let logger: Logger
    private var assignment: Assignment?
    private var artifacts: ArtifactStore
    /// The whole model, loaded on the first local request (split serving never needs it in memory).
    private var fullSession: InferenceSession?
    private var headSession: InferenceSession?
    private var pending: [UInt64: CheckedContinuation<InferenceResult, Error>] = [:]
    /// Request ids start from the clock so that a restarted agent (same device id) never reuses
    /// the id of a request the coordinator still holds in its duplicate cache.
    private var nextRequestID: UInt64 = Agent.firstRequestID()
    private var connectedWaiters: [CheckedContinuation<Void, Never>] = []
    private var connected = false
    private var eventTask: Task<Void, Never>?

    /// Milliseconds since 1970 shifted left by 20 bits: increasing across restarts, with room for
    /// a million requests per millisecond.
    static func firstRequestID(now: Date = Date()) -> UInt64 {
        UInt64(now.timeIntervalSince1970 * 1000) << 20
    }

    public init(_ configuration: AgentConfiguration) throws {
        self.configuration = configuration
        artifacts = ArtifactStore(directory: configuration.modelCache)
        var logger = Logger(label: "cleave.agent.\(configuration.deviceID)")
        logger.logLevel = .notice
        self.logger = logger
        let offline = try JSONEncoder().encode(DeviceState(id: configuration.deviceID, status: .offline, profile: nil))
        client = try MQTTClient(
            MQTTConfiguration(
                host: configuration.brokerHost, port: configuration.brokerPort, clientID: configuration.deviceID,
                will: .init(topic: Topics.deviceState(configuration.deviceID), payload: [UInt8](offline), qos: 1, retain: true)))
    }

    // MARK: - Lifecycle

    /// Connects, subscribes to its control and result topics and announces itself.
    public func start() async throws {
        let events = client.events
        eventTask = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                await self.handle(event)
            }
        }
        try client.connect()
        if !connected { await withCheckedContinuation { connectedWaiters.append($0) } }
    }

    /// Waits until an assignment arrived, both its models are verified and the head is loaded.
    public func waitUntilReady(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while headSession == nil || !(assignment.map { artifacts.contains($0.full.sha256) } ?? false) {
            guard ContinuousClock.now < deadline else {
                throw AgentError(description: "\(configuration.deviceID): no assignment and models within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Publishes the offline state and disconnects.
    public func stop() {
        if let payload = try? JSONEncoder().encode(DeviceState(id: configuration.deviceID, status: .offline, profile: nil)) {
            try? client.publish(MQTTMessage(topic: Topics.deviceState(configuration.deviceID), payload: [UInt8](payload), qos: 1, retain: true))
        }
        client.disconnect()
        eventTask?.cancel()
        for (_, continuation) in pending { continuation.resume(throwing: AgentError(description: "agent stopped")) }
        pending = [:]
    }

    // MARK: - Serving requests

    /// Serves one input (`[1, …]` float32) in `mode`; never throws for a failed request,
    /// it returns an outcome with the error instead.
    public func infer(_ input: Tensor, mode: InferenceMode) async -> AgentOutcome {
        let started = ContinuousClock.now
        let requestID = nextRequestID
        nextRequestID += 1
        func outcome(_ result: InferenceResult?, bytes: Int, error: String? = nil) -> AgentOutcome {
            Self.outcome(requestID: requestID, mode: mode, started: started, result: result, bytes: bytes, error: error)
        }
        guard let assignment, headSession != nil else {
            return outcome(nil, bytes: 0, error: "no assignment yet")
        }
        do {
            switch mode {
            case .local:
                let output = try loadedFullSession(assignment).run([assignment.inputName: input])
                guard let logits = output.values.first else { throw AgentError(description: "model produced no output") }
                let (prediction, confidence) = Classification.top(logits)
                return outcome(
                    InferenceResult(
                        requestID: requestID, prediction: prediction, confidence: confidence, error: nil, coordinator: "local", batchSize: 1),
                    bytes: 0)
            case .split:
                return await sendSplit(try headFeatures(input), requestID: requestID, started: started)
            case .offload:
                let frame = BottleneckCodec.encode(input, requestID: requestID, options: FrameOptions(codec: .uint8, zstdLevel: assignment.zstdLevel))
                let result = try await send(frame, requestID: requestID, mode: .offload)
                return outcome(result, bytes: frame.count)
            }
        } catch {
            return outcome(nil, bytes: 0, error: "\(error)")
        }
    }

    /// Sends features a head already computed (`[1, …]` at the assignment's cut) as a split
    /// request. A split ``infer(_:mode:)`` ends in the same code; `cleave bench split` calls
    /// this directly so that the benchmark's cores go to the coordinator, not to heads that
    /// would run on the boards.
    public func inferSplit(features: Tensor) async -> AgentOutcome {
        let requestID = nextRequestID
        nextRequestID += 1
        return await sendSplit(features, requestID: requestID, started: .now)
    }

    private func sendSplit(_ features: Tensor, requestID: UInt64, started: ContinuousClock.Instant) async -> AgentOutcome {
        guard let assignment else {
            return Self.outcome(requestID: requestID, mode: .split, started: started, result: nil, bytes: 0, error: "no assignment yet")
        }
        let codec = FrameCodec(named: assignment.codec) ?? .uint8
        let frame = BottleneckCodec.encode(features, requestID: requestID, options: FrameOptions(codec: codec, zstdLevel: assignment.zstdLevel))
        do {
            let result = try await send(frame, requestID: requestID, mode: .split)
            return Self.outcome(requestID: requestID, mode: .split, started: started, result: result, bytes: frame.count, error: nil)
        } catch {
            return Self.outcome(requestID: requestID, mode: .split, started: started, result: nil, bytes: 0, error: "\(error)")
        }
    }

    private static func outcome(
        requestID: UInt64, mode: InferenceMode, started: ContinuousClock.Instant, result: InferenceResult?, bytes: Int, error: String?
    ) -> AgentOutcome {
        let elapsed = ContinuousClock.now - started
        return AgentOutcome(
            requestID: requestID, mode: mode, prediction: result?.prediction, error: error ?? result?.error, bytesSent: bytes,
            latencyMilliseconds: Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15,
            batchSize: result?.batchSize ?? 1)
    }

    private func loadedFullSession(_ assignment: Assignment) throws -> InferenceSession {
        if let fullSession { return fullSession }
        let session = try loadSession(assignment.full.sha256, role: "full model")
        fullSession = session
        return session
    }

    private func loadSession(_ sha256: String, role: String) throws -> InferenceSession {
        let bytes: [UInt8]
        do {
            bytes = try artifacts.bytes(sha256)
        } catch {
            // A corrupt cache file: drop it and fetch the artifact again from the broker.
            artifacts.remove(sha256)
            try? client.subscribe(Topics.model(sha256), qos: 1)
            throw error
        }
        let threads = configuration.threads ?? configuration.profile.cores
        return InferenceSession(model: try Model(serialized: Data(bytes), source: "\(role) \(sha256.prefix(12))"), threads: threads)
    }

    /// The head's output for `input` at the assignment's cut (what a split request sends).
    public func headFeatures(_ input: Tensor) throws -> Tensor {
        guard let assignment, let headSession else { throw AgentError(description: "no assignment yet") }
        guard let features = try headSession.run([assignment.inputName: input])[assignment.cutTensor] else {
            throw AgentError(description: "the assigned head model has no output '\(assignment.cutTensor)'")
        }
        return features
    }

    private func send(_ frame: [UInt8], requestID: UInt64, mode: InferenceMode) async throws -> InferenceResult {
        let message = MQTTMessage(
            topic: Topics.infer(configuration.deviceID), payload: frame, qos: 1,
            responseTopic: Topics.results(configuration.deviceID), correlationData: RequestID.encode(requestID),
            userProperties: [Topics.modeProperty: mode.rawValue])
        let timeout = configuration.requestTimeout
        return try await withCheckedThrowingContinuation { continuation in
            pending[requestID] = continuation
            do {
                try client.publish(message)
            } catch {
                pending[requestID] = nil
                continuation.resume(throwing: error)
                return
            }
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expire(requestID, after: timeout)
            }
        }
    }

    private func expire(_ requestID: UInt64, after timeout: Duration) {
        guard let continuation = pending.removeValue(forKey: requestID) else { return }
        continuation.resume(throwing: AgentError(description: "no answer to request \(requestID) within \(timeout)"))
    }

    // MARK: - Events from the broker

    private func handle(_ event: MQTTEvent) async {
        switch event {
        case .connected:
            connected = true
            do {
                try client.subscribe(Topics.deviceControl(configuration.deviceID), qos: 1)
                try client.subscribe(Topics.results(configuration.deviceID), qos: 1)
                if let assignment {
                    for sha in [assignment.full.sha256, assignment.head.sha256] where !artifacts.contains(sha) {
                        try client.subscribe(Topics.model(sha), qos: 1)
                    }
                }
                let state = try JSONEncoder().encode(DeviceState(id: configuration.deviceID, status: .online, profile: configuration.profile))
                try client.publish(MQTTMessage(topic: Topics.deviceState(configuration.deviceID), payload: [UInt8](state), qos: 1, retain: true))
                logger.info("connected and announced")
            } catch {
                logger.error("announcing failed: \(error)")
            }
            let waiters = connectedWaiters
            connectedWaiters = []
            waiters.forEach { $0.resume() }
        case .refused(let code):
            logger.error("broker refused the connection (reason \(code))")
        case .disconnected(let code):
            if code != 0 { logger.warning("connection lost (code \(code)); reconnecting") }
        case .message(let message):
            if message.topic == Topics.results(configuration.deviceID) {
                receiveResult(message)
            } else if message.topic == Topics.deviceControl(configuration.deviceID) {
                receiveControl(message)
            } else if message.topic.hasPrefix("\(Topics.prefix)/models/") {
                receiveArtifact(message)
            }
        }
    }

    private func receiveResult(_ message: MQTTMessage) {
        guard let result = try? JSONDecoder().decode(InferenceResult.self, from: Data(message.payload)) else {
            logger.warning("unreadable result on \(message.topic) (\(message.payload.count) bytes)")
            return
        }
        // A duplicate answer (a redelivered QoS 1 message) finds no pending request and is dropped.
        pending.removeValue(forKey: result.requestID)?.resume(returning: result)
    }

    private func receiveControl(_ message: MQTTMessage) {
        guard !message.payload.isEmpty else { return }
        guard let control = try? JSONDecoder().decode(ControlMessage.self, from: Data(message.payload)), let assignment = control.assignment else {
            logger.warning("unreadable control message (\(message.payload.count) bytes)")
            return
        }
        guard assignment != self.assignment else { return }
        logger.notice("assigned \(assignment.model): cut at \(assignment.cutTensor) \(assignment.cutShape), codec \(assignment.codec)")
        self.assignment = assignment
        headSession = nil
        fullSession = nil
        for sha in [assignment.full.sha256, assignment.head.sha256] {
            if !artifacts.contains(sha) { try? client.subscribe(Topics.model(sha), qos: 1) }
        }
        loadSessionsIfComplete()
    }

    private func receiveArtifact(_ message: MQTTMessage) {
        let claimed = String(message.topic.split(separator: "/").last ?? "")
        let actual = SHA256.hex(message.payload)
        guard actual == claimed else {
            logger.error("refused model artifact on \(message.topic): its SHA-256 is \(actual)")
            return
        }
        guard !artifacts.contains(claimed) else { return }
        if let warning = artifacts.put(claimed, message.payload) { logger.warning("\(warning)") }
        try? client.unsubscribe(Topics.model(claimed))
        loadSessionsIfComplete()
    }

    private func loadSessionsIfComplete() {
        guard let assignment, headSession == nil, artifacts.contains(assignment.full.sha256), artifacts.contains(assignment.head.sha256)
        else { return }
        do {
            headSession = try loadSession(assignment.head.sha256, role: "head model")
            logger.notice("models verified; head loaded (the full model loads on the first local request)")
        } catch {
            logger.error("cannot load assigned models: \(error)")
        }
    }
}
