import CleaveCodec
import CleaveIdentity
import CleaveMQTT
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import FoundationEssentials
import Logging

/// The device agent: announces itself, takes its assignment, and serves requests locally,
/// split or offloaded. It composes three parts with one job each: the ``Provisioner``
/// (assignment → verified artifacts → sessions and costs), the ``RemoteChannel`` (frames out,
/// answers back, offline queue and retries) and the ``AdaptivePolicy`` (which mode, per request).
///
/// Follow one image: ``infer(_:)`` asks the policy for a mode; a split request runs the head,
/// encodes the cut tensor as a feature frame, hands it to the channel, which publishes it on
/// `infer/{id}` with a response topic and the request id as correlation data and resumes the
/// caller when the result arrives on `devices/{id}/results` — or, if it has not arrived by the
/// hedging deadline, the whole model runs locally instead.
public actor Agent {
    public let configuration: AgentConfiguration
    private let transport: any MessageTransport
    private let logger: Logger
    private var provisioner: Provisioner
    private let channel: RemoteChannel
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
    private var connected = false
    /// Drawn once per process and announced in the online state; with a fleet key, a control
    /// message must carry it (``DeviceState/nonce``): what was sent to an earlier start of this
    /// device, recorded and played again, is refused.
    nonisolated let nonce: String = {
        var generator = SystemRandomNumberGenerator()
        return SHA256.hexString((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }()
    /// The request journal (``AgentConfiguration/queueDirectory``), and whether what a previous
    /// process left there has been sent again.
    private let journal: RequestJournal?
    private var journalRecovered = false
    private var eventTask: Task<Void, Never>?
    private let epoch = ContinuousClock.now

    /// A random start in [1, 2⁶²] from the system's generator (getrandom), the ids of a run
    /// counting up from it. Not the clock: a board without a real-time clock boots at the same
    /// time every day, and two processes under one device id would share ids; random starts
    /// meet in the coordinator's result cache with a chance of about n² / 2⁶² for n requests.
    static func firstRequestID() -> UInt64 {
        var generator = SystemRandomNumberGenerator()
        return firstRequestID(using: &generator)
    }

    static func firstRequestID(using generator: inout some RandomNumberGenerator) -> UInt64 {
        UInt64.random(in: 1...(1 << 62), using: &generator)
    }

    /// The offline state, published retained by the will and by ``stop()``.
    static func offlineState(_ deviceID: String) -> MQTTMessage {
        let payload = (try? JSONEncoder().encode(DeviceState(id: deviceID, status: .offline, profile: nil))) ?? Data()
        return MQTTMessage(topic: Topic.deviceState(device: deviceID).path, payload: [UInt8](payload), qos: 1, retain: true)
    }

    /// An agent that reaches the broker of its configuration over MQTT.
    public init(_ configuration: AgentConfiguration) throws {
        let will = Self.offlineState(configuration.deviceID)
        let client = try MQTTClient(
            MQTTConfiguration(
                host: configuration.brokerHost, port: configuration.brokerPort, clientID: configuration.deviceID,
                username: configuration.username, password: configuration.password,
                will: .init(topic: will.topic, payload: will.payload, qos: 1, retain: true), tls: configuration.tls,
                // Retry every 1, then 2 s: back within about 2 s of the broker's return (with 4 s,
                // boards stayed local up to 8 s after an outage); hundreds of boards retrying
                // every 2 s are nothing for Mosquitto.
                reconnectDelay: (1, 2), sessionExpiry: configuration.sessionExpiry))
        self.init(configuration, transport: client)
    }

    /// An agent over any transport (the in-memory broker in unit tests); `logger` defaults to
    /// `cleave.agent.{id}` at notice level.
    public init(_ configuration: AgentConfiguration, transport: any MessageTransport, logger: Logger? = nil) {
        self.configuration = configuration
        self.transport = transport
        provisioner = Provisioner(configuration: configuration)
        let logger =
            logger
            ?? {
                var logger = Logger(label: "cleave.agent.\(configuration.deviceID)")
                logger.logLevel = .notice
                return logger
            }()
        self.logger = logger
        var journal: RequestJournal?
        if let folder = configuration.queueDirectory {
            do {
                journal = try RequestJournal(directory: folder)
            } catch {
                logger.error("no request journal: \(error); requests in flight are lost if this process crashes")
            }
        }
        self.journal = journal
        channel = RemoteChannel(
            transport: transport, offlineLimit: configuration.offlineQueueLimit, retryAfter: configuration.retryInterval, journal: journal,
            journalFailed: { logger.warning("\($0)") })
    }

    /// What the agent has done so far.
    public var statistics: AgentStatistics {
        get async {
            var result = counters
            result.retries = await channel.retries
            result.droppedAnswers = await channel.droppedAnswers
            return result
        }
    }

    /// Remote requests waiting for an answer, published or queued (for tests).
    var waitingRemote: Int {
        get async { await channel.waiting }
    }

    /// Whether the agent holds a broker connection (as its event loop has seen it).
    public var isConnected: Bool { connected }

    /// Milliseconds since the agent was made (the policy's clock).
    private func milliseconds(_ instant: ContinuousClock.Instant = .now) -> Double {
        (instant - epoch).milliseconds
    }

    // MARK: - Lifecycle

    /// Connects, subscribes to its control and result topics and announces itself.
    public func start() async throws {
        eventTask = try await transport.connect(deliveringEventsTo: { [weak self] event in await self?.handle(event) })
    }

    /// Waits until an assignment arrived, both its models are verified and the head is loaded.
    public func waitUntilReady(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !provisioner.isReady {
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
        while await channel.waiting > 0 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
    }

    /// Publishes the offline state and disconnects; requests still waiting fail.
    public func stop() async {
        try? transport.publish(Self.offlineState(configuration.deviceID))
        transport.disconnect()
        eventTask?.cancel()
        await channel.stop()
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
        guard let assignment = provisioner.assignment else { return Self.outcome(requestID, .split, started, failure: .noAssignment) }
        do {
            let frame = try encode(features, mode: .split, requestID: requestID, assignment: assignment)
            let result = try await send(frame, requestID: requestID, mode: .split, deadline: configuration.requestTimeout.milliseconds)
            return Self.outcome(requestID, .split, started, result: result, bytes: frame.count)
        } catch {
            return Self.outcome(requestID, .split, started, failure: AgentFailure(error))
        }
    }

    /// The head's output for `input` at the assignment's cut (what a split request sends).
    public func headFeatures(_ input: Tensor) throws -> Tensor { try provisioner.headFeatures(input) }

    /// The head's patch plan, when the assignment runs the head patch by patch.
    public var headPatchPlan: PatchPlan? { provisioner.headPatchPlan }

    /// The plan split requests are sent in parts with (``AgentConfiguration/streamPatches``).
    public var streamingPlan: PatchPlan? { provisioner.streamingPlan }

    private func takeRequestID() -> UInt64 {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    /// The whole model on the device.
    private func runLocal(_ input: Tensor, requestID: UInt64, started: ContinuousClock.Instant) async -> AgentOutcome {
        guard let assignment = provisioner.assignment, provisioner.headSession != nil else {
            return fail(Self.outcome(requestID, .local, started, failure: .noAssignment))
        }
        await emulate(emulated?.localMilliseconds)
        do {
            let output: [String: Tensor]
            do {
                output = try provisioner.full().run([assignment.inputName: input])
            } catch {
                // A corrupt cache file was dropped: fetch it again from the broker.
                subscribeToMissingArtifacts()
                throw error
            }
            guard let logits = output.values.first else { throw AgentError(description: "model produced no output") }
            let (prediction, confidence) = Classification.top(logits.scalars(as: Float.self))
            counters.answered[.local, default: 0] += 1
            let result = InferenceResult(
                requestID: requestID, prediction: prediction, confidence: confidence, coordinator: "local", batchSize: 1)
            return Self.outcome(requestID, .local, started, result: result)
        } catch {
            return fail(Self.outcome(requestID, .local, started, failure: .computation("\(error)")))
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
        guard let assignment = provisioner.assignment, provisioner.headSession != nil else {
            return fail(Self.outcome(requestID, mode, started, failure: .noAssignment))
        }
        do {
            let result: InferenceResult
            let bytesSent: Int
            if mode == .split, let streaming = configuration.streamPatches, let plan = provisioner.streamingPlan,
                input.shape == [1] + assignment.inputShape
            {
                (result, bytesSent) = try await serveInParts(
                    input, plan: plan, streaming: streaming, requestID: requestID, assignment: assignment, started: started, deadline: deadline)
            } else {
                var features = input
                if mode == .split {
                    // The emulated board pays for a patch plan's recomputed halos too.
                    await emulate(emulated.map { $0.headMilliseconds * (1 + (provisioner.headPatchPlan?.extraMultiplyAddShare ?? 0)) })
                    features = try provisioner.headFeatures(input)
                }
                let frame = try encode(features, mode: mode, requestID: requestID, assignment: assignment)
                let remaining = deadline - (milliseconds() - milliseconds(started))
                result = try await send(frame, requestID: requestID, mode: mode, deadline: remaining)
                bytesSent = frame.count
            }
            if result.prediction == nil, configuration.fallbackToLocal, let rejection = result.rejection {
                // A rejection is a failure of the remote path like a missing answer.
                logger.warning("request \(requestID) rejected by \(result.coordinator) (\(rejection)); computing it locally")
                if learn && !race { policy?.record(mode: mode, latency: nil, now: milliseconds() / 1000) }
                return await fallBack(input, from: mode, requestID: requestID, started: started)
            }
            let outcome = Self.outcome(requestID, mode, started, result: result, bytes: bytesSent)
            if result.prediction != nil { counters.answered[mode, default: 0] += 1 } else { counters.failed += 1 }
            if learn { policy?.record(mode: mode, latency: result.prediction != nil ? outcome.latencyMilliseconds : nil, now: milliseconds() / 1000) }
            return outcome
        } catch let failure as RemoteFailure where configuration.fallbackToLocal {
            logger.info("\(failure); computing it locally")
            if learn {
                if !race { policy?.record(mode: mode, latency: nil, now: milliseconds() / 1000) }
                if case .noAnswer = failure { rememberAbandoned(requestID, mode: mode, started: started, race: race) }
            }
            return await fallBack(input, from: mode, requestID: requestID, started: started)
        } catch {
            return fail(Self.outcome(requestID, mode, started, failure: AgentFailure(error)))
        }
    }

    /// A split request sent in parts: the head runs patch by patch and each patch's part of the
    /// cut tensor goes out as a frame of its own as soon as it is computed, so that sending
    /// overlaps computing; the coordinator assembles the parts before the tail. With emulated
    /// board time (the plan's extra multiply-adds included), part i of n leaves (i + 1) / n of
    /// the head's time after the start. Returns the
    /// answer and the bytes of all parts.
    private func serveInParts(
        _ input: Tensor, plan: PatchPlan, streaming: PatchStreaming, requestID: UInt64, assignment: Assignment, started: ContinuousClock.Instant,
        deadline: Double
    ) async throws -> (InferenceResult, Int) {
        let options = FrameOptions(codec: FrameCodec(named: assignment.codec.rawValue) ?? .uint8, zstdLevel: assignment.zstdLevel)
        let count = streaming == .patch ? plan.patchCount : plan.grid.rows
        let direct = emulated?.headMilliseconds == nil && connected
        var parts: [MQTTMessage] = []
        var published = 0
        func emit(_ part: Tensor, _ rows: Range<Int>, _ columns: Range<Int>) {
            var partOptions = options
            partOptions.region = FrameRegion(top: rows.lowerBound, left: columns.lowerBound, height: rows.count, width: columns.count, parts: count)
            let message = message(BottleneckCodec.encode(part, requestID: requestID, options: partOptions), requestID: requestID, mode: .split)
            parts.append(message)
            // All but the last go out now; the last goes through the channel, which waits for the answer.
            if direct, parts.count < count, published == parts.count - 1, (try? transport.publish(message)) != nil { published += 1 }
        }
        // Patches come row by row; a row's patches share their rows and together span the width.
        let (channels, width) = (plan.stageType.shape[1], plan.stageType.shape[3])
        var band: (tensor: Tensor, rows: Range<Int>)?
        try provisioner.headParts(input) { part, rows, columns in
            guard streaming == .row else { return emit(part, rows, columns) }
            if band?.rows != rows { band = (Tensor(zeros: [1, channels, rows.count, width]), rows) }
            Layout.copyWindow(of: part, from: (0, 0), into: band!.tensor, at: (0, columns.lowerBound), size: (rows.count, columns.count))
            if columns.upperBound == width { emit(band!.tensor, rows, 0..<width) }
        }
        guard parts.count == count else { throw AgentError(description: "the head made \(parts.count) parts, the plan promised \(count)") }
        // The emulated board pays for the plan's recomputed halos too.
        if let layered = emulated?.headMilliseconds, layered > 0 {
            let head = layered * (1 + plan.extraMultiplyAddShare)
            for index in 0..<(count - 1) {
                try? await Task.sleep(until: started + .microseconds(Int(head * 1000 * Double(index + 1) / Double(count))))
                if connected, published == index, (try? transport.publish(parts[index])) != nil { published += 1 }
            }
            try? await Task.sleep(until: started + .microseconds(Int(head * 1000)))
        }
        let bytes = parts.reduce(0) { $0 + $1.payload.count }
        policy?.observeFrame(mode: .split, bytes: bytes)
        let remaining = deadline - (milliseconds() - milliseconds(started))
        let result = try await channel.send(parts: parts, alreadyPublished: published, requestID: requestID, deadline: remaining)
        return (result, bytes)
    }

    /// The remote path failed: the whole model here, the outcome saying which mode it replaced.
    private func fallBack(_ input: Tensor, from mode: InferenceMode, requestID: UInt64, started: ContinuousClock.Instant) async -> AgentOutcome {
        counters.fallbacks += 1
        var outcome = await runLocal(input, requestID: requestID, started: started)
        outcome.fallback = mode
        return outcome
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
        let codec = mode == .split ? FrameCodec(named: assignment.codec.rawValue) ?? .uint8 : .uint8
        let frame = BottleneckCodec.encode(tensor, requestID: requestID, options: FrameOptions(codec: codec, zstdLevel: assignment.zstdLevel))
        policy?.observeFrame(mode: mode, bytes: frame.count)
        return frame
    }

    private static func outcome(
        _ requestID: UInt64, _ mode: InferenceMode, _ started: ContinuousClock.Instant, result: InferenceResult? = nil, bytes: Int = 0,
        failure: AgentFailure? = nil
    ) -> AgentOutcome {
        let rejection = result.flatMap { $0.prediction == nil ? $0.rejection ?? Rejection(.computationFailed, "no prediction") : nil }
        let failure = failure ?? rejection.map(AgentFailure.rejected)
        return AgentOutcome(
            requestID: requestID, mode: mode, fallback: nil, prediction: result?.prediction, failure: failure, bytesSent: bytes,
            latencyMilliseconds: (ContinuousClock.now - started).milliseconds, batchSize: result?.batchSize ?? 1, decision: nil)
    }

    /// Waits out the emulated device time, if the agent emulates a board.
    private func emulate(_ milliseconds: Double?) async {
        guard let milliseconds, milliseconds > 0 else { return }
        try? await Task.sleep(for: .microseconds(Int(milliseconds * 1000)))
    }

    /// Hands `frame` to the channel and waits for the answer, at most `deadline` milliseconds.
    private func send(_ frame: [UInt8], requestID: UInt64, mode: InferenceMode, deadline: Double) async throws -> InferenceResult {
        try await channel.send(message(frame, requestID: requestID, mode: mode), requestID: requestID, deadline: deadline)
    }

    /// The MQTT message that carries `frame`: this device's infer topic, the results topic to
    /// answer on, the request id as correlation data and the mode as a user property.
    private func message(_ frame: [UInt8], requestID: UInt64, mode: InferenceMode) -> MQTTMessage {
        let device = configuration.deviceID
        return MQTTMessage(
            topic: Topic.infer(device: device).path, payload: frame, qos: 1, responseTopic: Topic.results(device: device).path,
            correlationData: RequestID.encode(requestID), userProperties: [Topic.modeProperty: mode.rawValue])
    }

    // MARK: - Events from the broker

    private func handle(_ event: MQTTEvent) async {
        switch event {
        case .connected:
            connected = true
            counters.connects += 1
            do {
                try transport.subscribe(Topic.deviceControl(device: configuration.deviceID).path, qos: 1)
                try transport.subscribe(Topic.results(device: configuration.deviceID).path, qos: 1)
                subscribeToMissingArtifacts()
                let state = try JSONEncoder().encode(
                    DeviceState(id: configuration.deviceID, status: .online, profile: configuration.profile, nonce: nonce))
                try transport.publish(
                    MQTTMessage(topic: Topic.deviceState(device: configuration.deviceID).path, payload: [UInt8](state), qos: 1, retain: true))
                logger.info("connected and announced")
            } catch {
                logger.error("announcing failed: \(error)")
            }
            // Whatever waited while offline goes out now, and so does whatever was in flight when
            // the connection dropped (the coordinator answers repeats from its cache).
            let sent = await channel.connectionEstablished()
            if sent > 0 { logger.notice("connected: sending \(sent) waiting requests") }
            if !journalRecovered {
                journalRecovered = true
                recoverJournal()
            }
            if counters.connects > 1 { policy?.reconnected(now: milliseconds() / 1000) }
        case .refused(let code):
            logger.error("broker refused the connection (reason \(code))")
        case .disconnected(let code):
            connected = false
            await channel.connectionLost()
            if code != 0 {
                logger.warning("no broker connection (code \(code): \(MQTTError.reason(code))); reconnecting, requests wait in the offline queue")
            }
        case .message(let message):
            switch Topic(parsing: message.topic) {
            case .results(let device) where device == configuration.deviceID: await receiveResult(message)
            case .deviceControl(let device) where device == configuration.deviceID: receiveControl(message)
            case .model(let sha256): receiveArtifact(message, claimed: sha256)
            default: logger.debug("ignored a message on \(message.topic)")
            }
        }
    }

    private func receiveResult(_ message: MQTTMessage) async {
        guard let result = try? JSONDecoder().decode(InferenceResult.self, from: Data(message.payload)) else {
            logger.warning("unreadable result on \(message.topic) (\(message.payload.count) bytes)")
            return
        }
        // The coordinator echoes the request's correlation data; an answer whose JSON id it does
        // not confirm is not ours to trust.
        guard RequestID.decode(message.correlationData) == result.requestID else {
            logger.warning("dropped a result for request \(result.requestID) whose correlation data does not match")
            return
        }
        // "Busy" without local fallback is not an answer: the request keeps waiting and the
        // retry timer sends it again (after 1, 2, 4 s), when the coordinator has room.
        if result.rejection?.reason == .busy && !configuration.fallbackToLocal {
            counters.busy += 1
            return
        }
        // A duplicate answer (a retry's, or a redelivered QoS 1 message) finds no waiting request
        // and is dropped: the application sees each request answered once.
        if await channel.deliver(result) { return }
        if let late = abandoned.removeValue(forKey: result.requestID), result.prediction != nil {
            policy?.record(mode: late.mode, latency: (ContinuousClock.now - late.started).milliseconds, now: milliseconds() / 1000)
        }
    }

    // MARK: - The request journal

    /// Sends again what a previous process under this journal left unanswered; each answer goes
    /// to `answers.jsonl` before the request's file is removed.
    private func recoverJournal() {
        guard let journal else { return }
        let (entries, unreadable) = journal.pending()
        for name in unreadable { logger.warning("journal file \(journal.directory)/\(name) is unreadable; left in place") }
        guard !entries.isEmpty else { return }
        logger.notice("journal: sending again \(entries.count) requests a previous process left unanswered")
        for entry in entries { Task { await recover(entry, journal: journal) } }
    }

    private func recover(_ entry: RequestJournal.Entry, journal: RequestJournal) async {
        var answer = RequestJournal.Answer(requestID: entry.requestID)
        do {
            // Nobody waits for it now: it may take several retry rounds.
            let result = try await channel.send(
                parts: entry.mqttMessages, alreadyPublished: 0, requestID: entry.requestID, deadline: 3 * configuration.requestTimeout.milliseconds,
                journal: false)
            answer.prediction = result.prediction
            answer.confidence = result.confidence
            answer.error = result.rejection?.description
        } catch RemoteFailure.stopped {
            return  // stays in the journal for the next process
        } catch {
            answer.error = "\(error)"
        }
        do {
            try journal.append(answer)
            journal.remove(entry.requestID)
            counters.recovered += 1
            logger.notice(
                "journal: request \(entry.requestID) from before the restart \(answer.prediction.map { "answered: class \($0)" } ?? "failed: \(answer.error ?? "")")"
            )
        } catch {
            logger.error("journal: cannot record the answer to request \(entry.requestID) (\(error)); it stays in the journal")
        }
    }

    private func receiveControl(_ message: MQTTMessage) {
        guard !message.payload.isEmpty else { return }
        var payload = message.payload
        if let fleetKey = configuration.fleetKey {
            do {
                // Freshness is the nonce's job (below), not the stamp's: a coordinator whose
                // clock was set back, or two with clocks apart, must still be heard.
                payload = try fleetKey.open(message.payload, topic: message.topic).payload
            } catch {
                counters.refusedControl += 1
                logger.error("refused control message on \(message.topic) (\(message.payload.count) bytes): \(error.kind.rawValue): \(error)")
                return
            }
        }
        let control: ControlMessage
        do {
            control = try JSONDecoder().decode(ControlMessage.self, from: Data(payload))
        } catch {
            logger.warning("unreadable control message (\(message.payload.count) bytes): \(error)")
            return
        }
        if configuration.fleetKey != nil, control.nonce != nonce {
            counters.refusedControl += 1
            logger.error(
                "refused control message on \(message.topic) (\(message.payload.count) bytes): replayed: it answers another start of this device (nonce \(control.nonce ?? "none"), this process announced \(nonce))"
            )
            return
        }
        guard let assignment = control.assignment, provisioner.accept(assignment) else { return }
        logger.notice("assigned \(assignment.model): cut at \(assignment.cutTensor) \(assignment.cutShape), codec \(assignment.codec.rawValue)")
        policy = nil
        subscribeToMissingArtifacts()
        loadIfComplete()
    }

    private func receiveArtifact(_ message: MQTTMessage, claimed: String) {
        switch provisioner.receive(message.payload, claimed: claimed) {
        case .refused(let actual):
            logger.error("refused model artifact on \(message.topic): its SHA-256 is \(actual)")
        case .stored(let warning):
            if let warning { logger.warning("\(warning)") }
            try? transport.unsubscribe(Topic.model(sha256: claimed).path)
            loadIfComplete()
        case .duplicate:
            // Held already: another agent sharing the cache folder wrote it first. It may be
            // the last one this agent waited for.
            try? transport.unsubscribe(Topic.model(sha256: claimed).path)
            loadIfComplete()
        }
    }

    private func subscribeToMissingArtifacts() {
        for sha256 in provisioner.missing { try? transport.subscribe(Topic.model(sha256: sha256).path, qos: 1) }
    }

    private func loadIfComplete() {
        do {
            guard let costs = try provisioner.loadIfComplete(scale: configuration.computeEmulation ?? 1) else { return }
            emulated = configuration.computeEmulation == nil ? nil : costs
            policy = AdaptivePolicy(costs: costs, timeout: configuration.requestTimeout.milliseconds)
            logger.notice(
                "models verified; head loaded (the full model loads on the first local request); predicted local \(costs.localMilliseconds) ms, head \(costs.headMilliseconds) ms"
            )
            if let plan = provisioner.headPatchPlan, let patch = provisioner.assignment?.patch {
                let extra = (plan.extraMultiplyAddShare * 1000).rounded() / 10
                logger.notice(
                    "head runs patch by patch: stage ends at '\(plan.stageEnd)' \(plan.stageType), grid \(plan.grid), peak activation memory \(ByteCountText(plan.peakBytes)) of a \(ByteCountText(patch.budgetBytes)) budget (the coordinator planned \(ByteCountText(patch.peakBytes))), +\(extra)% multiply-adds"
                )
            } else {
                logger.info("head runs layer by layer")
            }
            if let streaming = configuration.streamPatches {
                if let plan = provisioner.streamingPlan {
                    let extra = (plan.extraMultiplyAddShare * 1000).rounded() / 10
                    logger.notice(
                        "split requests go out in \(streaming == .patch ? plan.patchCount : plan.grid.rows) parts (one per \(streaming.rawValue)): the head runs on a \(plan.grid) grid ending at the cut '\(plan.stageEnd)', peak activation memory \(ByteCountText(plan.peakBytes)), +\(extra)% multiply-adds"
                    )
                } else {
                    logger.warning("split requests go out whole: \(provisioner.streamingRefusal ?? "no patch plan ends at the cut")")
                }
            }
        } catch {
            logger.error("cannot load assigned models: \(error)")
            subscribeToMissingArtifacts()
        }
    }
}
