import CleaveCodec
import CleaveMQTT
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Logging

/// The device agent: announces itself, takes its assignment, fetches and verifies
/// the models, and serves requests locally, split or offloaded.
///
/// Follow one image: ``infer(_:)`` asks the ``AdaptivePolicy`` for a mode; a split request
/// runs the head, encodes the cut tensor as a feature frame, publishes it on `infer/{id}`
/// with a response topic and the request id as correlation data, and resumes when the
/// result arrives on `devices/{id}/results` — or, if it has not arrived by the hedging
/// deadline, computes the whole model locally instead. ``RemoteRequests`` keeps every
/// unanswered request through broker restarts and link outages.
public actor Agent {
    public let configuration: AgentConfiguration
    private let client: MQTTClient
    private let logger: Logger
    private var assignment: Assignment?
    private var artifacts: ArtifactStore
    /// The whole model, loaded on the first local request (split serving never needs it in memory).
    private var fullSession: InferenceSession?
    private var headSession: InferenceSession?
    private var remote: RemoteRequests<CheckedContinuation<InferenceResult, Error>>
    /// Made when the models are loaded: it needs their FLOPs.
    private var policy: AdaptivePolicy?
    private var lastDecision: InferenceMode?
    /// Adaptive requests computed locally because their answer was late, by id: a late answer
    /// is still a measurement of the link.
    private var abandoned: [UInt64: (mode: InferenceMode, started: ContinuousClock.Instant)] = [:]
    /// Device compute times to emulate (``AgentConfiguration/computeEmulation``).
    private var emulated: ModeCosts?
    private var counters = AgentStatistics()
    /// Request ids start from the clock so that a restarted agent (same device id) never reuses
    /// the id of a request the coordinator still holds in its duplicate cache.
    private var nextRequestID: UInt64 = Agent.firstRequestID()
    private var connectedWaiters: [CheckedContinuation<Void, Never>] = []
    private var connected = false
    private var eventTask: Task<Void, Never>?
    private let epoch = ContinuousClock.now

    /// Milliseconds since 1970 shifted left by 20 bits: increasing across restarts, with room for
    /// a million requests per millisecond.
    static func firstRequestID(now: Date = Date()) -> UInt64 {
        UInt64(now.timeIntervalSince1970 * 1000) << 20
    }

    public init(_ configuration: AgentConfiguration) throws {
        self.configuration = configuration
        artifacts = ArtifactStore(directory: configuration.modelCache)
        remote = RemoteRequests(offlineLimit: configuration.offlineQueueLimit, retryAfter: configuration.retryInterval.milliseconds)
        var logger = Logger(label: "cleave.agent.\(configuration.deviceID)")
        logger.logLevel = .notice
        self.logger = logger
        let offline = try JSONEncoder().encode(DeviceState(id: configuration.deviceID, status: .offline, profile: nil))
        client = try MQTTClient(
            MQTTConfiguration(
                host: configuration.brokerHost, port: configuration.brokerPort, clientID: configuration.deviceID,
                username: configuration.username, password: configuration.password,
                will: .init(topic: Topics.deviceState(configuration.deviceID), payload: [UInt8](offline), qos: 1, retain: true),
                reconnectDelay: (1, 4), sessionExpiry: configuration.sessionExpiry))
    }

    /// What the agent has done so far.
    public var statistics: AgentStatistics {
        var result = counters
        result.retries = remote.retries
        result.droppedAnswers = remote.droppedAnswers
        return result
    }

    /// Milliseconds since the agent was made (the clock of ``RemoteRequests`` and the policy).
    private func milliseconds(_ instant: ContinuousClock.Instant = .now) -> Double {
        (instant - epoch).milliseconds
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

    /// Waits until no remote request is waiting (at most `timeout`): before a planned restart, so
    /// that every request is answered by this process.
    public func drain(timeout: Duration = .seconds(30)) async {
        let deadline = ContinuousClock.now + timeout
        while remote.count > 0 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
    }

    /// Publishes the offline state and disconnects; requests still waiting fail.
    public func stop() {
        if let payload = try? JSONEncoder().encode(DeviceState(id: configuration.deviceID, status: .offline, profile: nil)) {
            try? client.publish(MQTTMessage(topic: Topics.deviceState(configuration.deviceID), payload: [UInt8](payload), qos: 1, retain: true))
        }
        client.disconnect()
        eventTask?.cancel()
        for (id, entry) in remote.removeAll() { entry.waiter.resume(throwing: RemoteFailure.stopped(requestID: id)) }
    }

    // MARK: - Serving requests

    /// Serves one input (`[1, …]` float32) in the mode the ``AdaptivePolicy`` predicts to be
    /// fastest on the link of the moment, and logs each change of mode with its numbers.
    ///
    /// A remote request waits for its answer at most the policy's hedging delay (and never
    /// longer than the request timeout); then the whole model runs locally and the outcome
    /// says ``AgentOutcome/fallback``. A request the policy sends to measure the remote path
    /// (``AdaptivePolicy/Decision/race``) is computed locally at once. Answers that come
    /// after their request was computed locally still teach the policy the link's latency.
    /// Never throws: a failure is an outcome with an error.
    public func infer(_ input: Tensor) async -> AgentOutcome {
        guard policy != nil else { return await infer(input, mode: .split) }
        let started = ContinuousClock.now
        var decision = policy!.decide(now: milliseconds(started) / 1000)
        if !connected && decision.mode != .local {
            // Without a broker connection a remote request could only wait in the offline queue.
            decision = AdaptivePolicy.Decision(mode: .local, predicted: decision.predicted, reason: "no broker connection")
        }
        if decision.mode != lastDecision {
            logger.notice("mode \(decision)")
            lastDecision = decision.mode
        }
        var outcome: AgentOutcome
        if decision.mode == .local {
            outcome = await runLocal(input, requestID: takeRequestID(), started: started)
        } else {
            let hedge = decision.race ? 0 : min(policy!.hedgeDelay(for: decision.mode), configuration.requestTimeout.milliseconds)
            outcome = await serveRemote(
                input, mode: decision.mode, requestID: takeRequestID(), started: started, deadline: hedge, learn: true, race: decision.race)
        }
        outcome.decision = decision.description
        return outcome
    }

    /// Serves one input (`[1, …]` float32) in `mode`. A remote request waits up to the request
    /// timeout, then falls back to local (``AgentConfiguration/fallbackToLocal``) or fails.
    /// Never throws: a failure is an outcome with an error.
    public func infer(_ input: Tensor, mode: InferenceMode) async -> AgentOutcome {
        let started = ContinuousClock.now
        let requestID = takeRequestID()
        if mode == .local { return await runLocal(input, requestID: requestID, started: started) }
        return await serveRemote(input, mode: mode, requestID: requestID, started: started, deadline: configuration.requestTimeout.milliseconds)
    }

    /// Sends features a head already computed (`[1, …]` at the assignment's cut) as a split
    /// request, without a local fallback. `cleave bench split` calls this so that the
    /// benchmark's cores go to the coordinator, not to heads that would run on the boards.
    public func inferSplit(features: Tensor) async -> AgentOutcome {
        let requestID = takeRequestID()
        let started = ContinuousClock.now
        guard let assignment else { return Self.outcome(requestID, .split, started, error: "no assignment yet") }
        do {
            let frame = try encode(features, mode: .split, requestID: requestID, assignment: assignment)
            let result = try await send(frame, requestID: requestID, mode: .split, deadline: configuration.requestTimeout.milliseconds)
            return Self.outcome(requestID, .split, started, result: result, bytes: frame.count)
        } catch {
            return Self.outcome(requestID, .split, started, error: "\(error)")
        }
    }

    private func takeRequestID() -> UInt64 {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    /// The whole model on the device.
    private func runLocal(_ input: Tensor, requestID: UInt64, started: ContinuousClock.Instant) async -> AgentOutcome {
        guard let assignment, headSession != nil else { return fail(Self.outcome(requestID, .local, started, error: "no assignment yet")) }
        await emulate(emulated?.localMilliseconds)
        do {
            let output = try loadedFullSession(assignment).run([assignment.inputName: input])
            guard let logits = output.values.first else { throw AgentError(description: "model produced no output") }
            let (prediction, confidence) = Classification.top(logits.scalars(as: Float.self))
            counters.answered[.local, default: 0] += 1
            let result = InferenceResult(
                requestID: requestID, prediction: prediction, confidence: confidence, error: nil, coordinator: "local", batchSize: 1)
            return Self.outcome(requestID, .local, started, result: result)
        } catch {
            return fail(Self.outcome(requestID, .local, started, error: "\(error)"))
        }
    }

    /// Split or offload: the frame to a coordinator, the answer back, or the local fallback
    /// when none came within `deadline` milliseconds of `started`. With `learn`, the policy
    /// records the outcome, and an answer that comes after the fallback is recorded too; a
    /// `race` (deadline 0: a request sent to measure) counts as failed only if no answer comes
    /// within the request timeout.
    private func serveRemote(
        _ input: Tensor, mode: InferenceMode, requestID: UInt64, started: ContinuousClock.Instant, deadline: Double, learn: Bool = false,
        race: Bool = false
    ) async -> AgentOutcome {
        guard let assignment, headSession != nil else { return fail(Self.outcome(requestID, mode, started, error: "no assignment yet")) }
        do {
            var features = input
            if mode == .split {
                await emulate(emulated?.headMilliseconds)
                features = try headFeatures(input)
            }
            let frame = try encode(features, mode: mode, requestID: requestID, assignment: assignment)
            let remaining = deadline - (milliseconds() - milliseconds(started))
            let result = try await send(frame, requestID: requestID, mode: mode, deadline: remaining)
            let outcome = Self.outcome(requestID, mode, started, result: result, bytes: frame.count)
            if result.prediction != nil { counters.answered[mode, default: 0] += 1 } else { counters.failed += 1 }
            if learn { policy?.record(mode: mode, latency: result.prediction != nil ? outcome.latencyMilliseconds : nil, now: milliseconds() / 1000) }
            return outcome
        } catch let failure as RemoteFailure where configuration.fallbackToLocal {
            logger.info("\(failure); computing it locally")
            counters.fallbacks += 1
            if learn {
                if !race { policy?.record(mode: mode, latency: nil, now: milliseconds() / 1000) }
                if case .noAnswer = failure { rememberAbandoned(requestID, mode: mode, started: started, race: race) }
            }
            var outcome = await runLocal(input, requestID: requestID, started: started)
            outcome.fallback = mode
            return outcome
        } catch {
            return fail(Self.outcome(requestID, mode, started, error: "\(error)"))
        }
    }

    /// Keeps a given-up request for one request timeout, so that its late answer can still be
    /// measured; a race without an answer by then is recorded as a failure.
    private func rememberAbandoned(_ requestID: UInt64, mode: InferenceMode, started: ContinuousClock.Instant, race: Bool) {
        abandoned[requestID] = (mode, started)
        let timeout = configuration.requestTimeout
        Task { [weak self] in
            try? await Task.sleep(until: started + timeout)
            await self?.forgetAbandoned(requestID, failed: race)
        }
    }

    private func forgetAbandoned(_ requestID: UInt64, failed: Bool) {
        guard let entry = abandoned.removeValue(forKey: requestID), failed else { return }
        policy?.record(mode: entry.mode, latency: nil, now: milliseconds() / 1000)
    }

    private func fail(_ outcome: AgentOutcome) -> AgentOutcome {
        counters.failed += 1
        return outcome
    }

    /// The frame for a split (features at the cut, the assignment's codec) or offload (the
    /// input, uint8) request; its size teaches the policy what each mode sends.
    private func encode(_ tensor: Tensor, mode: InferenceMode, requestID: UInt64, assignment: Assignment) throws -> [UInt8] {
        let codec = mode == .split ? FrameCodec(named: assignment.codec) ?? .uint8 : .uint8
        let frame = BottleneckCodec.encode(tensor, requestID: requestID, options: FrameOptions(codec: codec, zstdLevel: assignment.zstdLevel))
        policy?.observeFrame(mode: mode, bytes: frame.count)
        return frame
    }

    private static func outcome(
        _ requestID: UInt64, _ mode: InferenceMode, _ started: ContinuousClock.Instant, result: InferenceResult? = nil, bytes: Int = 0,
        error: String? = nil
    ) -> AgentOutcome {
        AgentOutcome(
            requestID: requestID, mode: mode, fallback: nil, prediction: result?.prediction, error: error ?? result?.error, bytesSent: bytes,
            latencyMilliseconds: (ContinuousClock.now - started).milliseconds, batchSize: result?.batchSize ?? 1, decision: nil)
    }

    /// Waits out the emulated device time, if the agent emulates a board.
    private func emulate(_ milliseconds: Double?) async {
        guard let milliseconds, milliseconds > 0 else { return }
        try? await Task.sleep(for: .microseconds(Int(milliseconds * 1000)))
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

    // MARK: - Remote requests

    /// Publishes `frame` (or queues it while offline) and waits for the answer, at most
    /// `deadline` milliseconds; retries and the offline queue are ``RemoteRequests``'s.
    private func send(_ frame: [UInt8], requestID: UInt64, mode: InferenceMode, deadline: Double) async throws -> InferenceResult {
        let message = MQTTMessage(
            topic: Topics.infer(configuration.deviceID), payload: frame, qos: 1,
            responseTopic: Topics.results(configuration.deviceID), correlationData: RequestID.encode(requestID),
            userProperties: [Topics.modeProperty: mode.rawValue])
        return try await withCheckedThrowingContinuation { continuation in
            let now = milliseconds()
            let (publication, evicted) = remote.add(
                requestID, message: message, now: now, deadline: now + max(0, deadline), connected: connected, waiter: continuation)
            if let (id, entry) = evicted {
                entry.waiter.resume(throwing: RemoteFailure.offlineQueueFull(requestID: id, limit: remote.offlineLimit))
            }
            if let publication { publish(publication) }
            Task { [weak self] in await self?.watch(requestID, since: now) }
        }
    }

    /// Retries `requestID` when its answer is late and fails it at its deadline.
    private func watch(_ requestID: UInt64, since start: Double) async {
        while let next = remote.nextEvent(for: requestID) {
            // Wake at least every 200 ms: a queued request is published by the reconnect, and its
            // retries must not wait for the deadline.
            let wait = min(next - milliseconds(), 200)
            if wait > 0 { try? await Task.sleep(for: .microseconds(Int(wait * 1000))) }
            let (retry, expired) = remote.service(requestID, now: milliseconds(), connected: connected)
            if let retry { publish(retry) }
            if let expired {
                expired.waiter.resume(throwing: RemoteFailure.noAnswer(requestID: requestID, afterMilliseconds: milliseconds() - start))
                return
            }
        }
    }

    private func publish(_ publication: RemoteRequests<CheckedContinuation<InferenceResult, Error>>.Publication) {
        do {
            try client.publish(publication.message)
        } catch {
            remote.unsent(publication.requestID)
        }
    }

    // MARK: - Events from the broker

    private func handle(_ event: MQTTEvent) async {
        switch event {
        case .connected:
            connected = true
            counters.connects += 1
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
            // Whatever waited while offline goes out now, and so does whatever was in flight when
            // the connection dropped (the coordinator answers repeats from its cache).
            let waiting = remote.flush(now: milliseconds())
            if !waiting.isEmpty { logger.notice("connected: sending \(waiting.count) waiting requests") }
            waiting.forEach(publish)
            if counters.connects > 1 { policy?.reconnected(now: milliseconds() / 1000) }
            let waiters = connectedWaiters
            connectedWaiters = []
            waiters.forEach { $0.resume() }
        case .refused(let code):
            logger.error("broker refused the connection (reason \(code))")
        case .disconnected(let code):
            connected = false
            remote.disconnected()
            if code != 0 { logger.warning("connection lost (code \(code)); reconnecting, requests wait in the offline queue") }
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
        // A duplicate answer (a retry's, or a redelivered QoS 1 message) finds no waiting request
        // and is dropped: the application sees each request answered once.
        if let waiting = remote.answer(result.requestID) {
            waiting.waiter.resume(returning: result)
        } else if let late = abandoned.removeValue(forKey: result.requestID), result.prediction != nil {
            policy?.record(mode: late.mode, latency: (ContinuousClock.now - late.started).milliseconds, now: milliseconds() / 1000)
        }
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
        policy = nil
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

    /// What each mode costs on this device: FLOPs of the assigned models over the profile's
    /// GFLOP/s (× `scale`); frame sizes are first guesses that the frames sent replace.
    private func modeCosts(_ assignment: Assignment, scale: Double) throws -> ModeCosts {
        let types = [assignment.inputName: TensorType([1] + assignment.inputShape, .float32)]
        func flops(_ sha256: String) throws -> Int {
            let model = try Model(serialized: Data(try artifacts.bytes(sha256)))
            return try ModelSummary(session: InferenceSession(model: model, threads: 1), types: types).flops
        }
        return ModeCosts.emulated(
            fullFLOPs: try flops(assignment.full.sha256), headFLOPs: try flops(assignment.head.sha256), profile: configuration.profile,
            scale: scale, splitBytes: 40 + assignment.cutShape.reduce(1, *), offloadBytes: 40 + assignment.inputShape.reduce(1, *))
    }

    private func loadSessionsIfComplete() {
        guard let assignment, headSession == nil, artifacts.contains(assignment.full.sha256), artifacts.contains(assignment.head.sha256)
        else { return }
        do {
            headSession = try loadSession(assignment.head.sha256, role: "head model")
            let costs = try modeCosts(assignment, scale: configuration.computeEmulation ?? 1)
            emulated = configuration.computeEmulation == nil ? nil : costs
            policy = AdaptivePolicy(costs: costs, timeout: configuration.requestTimeout.milliseconds)
            logger.notice(
                "models verified; head loaded (the full model loads on the first local request); predicted local \(costs.localMilliseconds) ms, head \(costs.headMilliseconds) ms"
            )
        } catch {
            logger.error("cannot load assigned models: \(error)")
        }
    }
}
