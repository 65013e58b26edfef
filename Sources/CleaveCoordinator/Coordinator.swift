import CleaveCodec
import CleaveIdentity
import CleaveMQTT
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How a coordinator reaches the broker, what it serves and how it batches.
public struct CoordinatorConfiguration: Sendable {
    /// Unique coordinator id (also its MQTT client id).
    public var id: String
    public var brokerHost: String
    public var brokerPort: Int
    /// Largest batch the tail runs at once.
    public var maximumBatch: Int
    /// Longest a request waits for others to join its batch.
    public var maximumWait: Duration
    /// Tail workers: batches that run at the same time, each on one core (one thread per batch
    /// keeps small GEMMs efficient; parallel batches use the cores instead).
    public var threads: Int
    /// Largest frame accepted, in bytes; larger ones are rejected before decoding.
    public var maximumFrameBytes: Int
    /// Frames of one device being served at once; more are answered `busy` at once (the
    /// agent computes them locally), so one device cannot queue unbounded work.
    public var maximumInFlightPerDevice: Int
    /// Broker credentials.
    public var username: String?
    public var password: String?
    /// TLS files (CA, and this coordinator's certificate and key) for a TLS listener.
    public var tls: MQTTConfiguration.TLS?
    /// The fleet signing key: when set, every control message goes out signed (boards pinned to
    /// the fleet key refuse unsigned ones).
    public var signingKey: FleetSigningKey?
    /// Every batch takes at least this long: a slower coordinator, emulated (fault and overload
    /// tests); nil computes as fast as it can.
    public var emulatedBatchTime: Duration?
    /// A file that gets one line per frame computed (`device/id[/crc] mode batch-size`): an
    /// audit trail of the work done, which outlives a `kill -9` (the fault suite counts
    /// requests computed twice from it). Nil keeps none.
    public var requestLog: String?

    public init(
        id: String = "coordinator-1", brokerHost: String = "127.0.0.1", brokerPort: Int = 1883, maximumBatch: Int = 16,
        maximumWait: Duration = .milliseconds(2), threads: Int = 1, maximumFrameBytes: Int = 1 << 20, maximumInFlightPerDevice: Int = 64,
        username: String? = nil, password: String? = nil, tls: MQTTConfiguration.TLS? = nil, signingKey: FleetSigningKey? = nil
    ) {
        self.tls = tls
        self.signingKey = signingKey
        self.maximumInFlightPerDevice = max(1, maximumInFlightPerDevice)
        self.username = username
        self.password = password
        self.maximumFrameBytes = maximumFrameBytes
        self.id = id
        self.brokerHost = brokerHost
        self.brokerPort = brokerPort
        self.maximumBatch = maximumBatch
        self.maximumWait = maximumWait
        self.threads = threads
    }
}

/// Counters a coordinator keeps, for logs and tests.
public struct CoordinatorStatistics: Sendable {
    public var answered = 0
    public var rejected = 0
    public var duplicates = 0
    /// Requests put together from parts (one frame per patch) before the tail.
    public var assembled = 0
    /// Frames answered `busy` (the device had its limit in flight).
    public var busy = 0
    public var devicesOnline = 0
}

/// The coordinator: registry of devices, assignment, tail execution with dynamic
/// batching, and answers on each request's response topic.
///
/// Follow one frame: it arrives through the shared subscription, is decoded with
/// the assignment's shape, waits in the ``TailBatcher`` for company, runs through
/// the tail, and its class goes back on the MQTT v5 response topic with the same
/// correlation data.
public actor Coordinator {
    public let configuration: CoordinatorConfiguration
    private let bundle: ModelBundle
    private let transport: any MessageTransport
    private let logger: Logger
    private let planner: any Planner
    private let tailBatcher: TailBatcher
    private let fullBatcher: TailBatcher
    /// The artifacts and shapes this coordinator serves (every plan is a variant of it).
    private let served: Assignment
    private let headDigestPrefix: [UInt8]
    private var devices: [String: DeviceState] = [:]
    /// Answers to the last ``recentCapacity`` requests, for duplicates (a QoS 1 redelivery).
    private var recent: [String: InferenceResult] = [:]
    private var recentOrder: [String] = []
    private var recentNext = 0
    private let recentCapacity = 4096
    /// Copies of requests being computed, by `device/id`: answered with the first copy's result.
    private var inFlight: [String: [MQTTMessage]] = [:]
    /// Requests sent in parts whose parts have not all come, by `device/id`; dropped after
    /// ``partsTimeout`` (an agent that gave up computes the request locally), at most
    /// ``partsCapacity`` at once (the oldest goes first).
    private var partial: [String: (assembly: PartAssembly, since: ContinuousClock.Instant)] = [:]
    private let partsTimeout = Duration.seconds(30)
    private let partsCapacity = 1024
    private var eventTask: Task<Void, Never>?
    private var connected = false
    /// Frames being computed, and whether new ones are refused (a graceful shutdown).
    /// Frames being served, per device (no entry: none).
    private var servingPerDevice: [String: Int] = [:]
    private var serving: Int { servingPerDevice.values.reduce(0, +) }
    private var draining = false
    /// Stamps for signed control messages: increasing, so a board can refuse replays.
    private var issueClock = IssueClock()
    public private(set) var statistics = CoordinatorStatistics()

    /// A coordinator that reaches the broker of its configuration over MQTT.
    public init(_ configuration: CoordinatorConfiguration, bundle: ModelBundle) throws {
        let client = try MQTTClient(
            MQTTConfiguration(
                host: configuration.brokerHost, port: configuration.brokerPort, clientID: configuration.id,
                username: configuration.username, password: configuration.password, tls: configuration.tls, reconnectDelay: (1, 2)))
        try self.init(configuration, bundle: bundle, transport: client)
    }

    /// A coordinator over any transport (the in-memory broker in unit tests), with the split
    /// planner for `bundle` unless `planner` is given.
    public init(
        _ configuration: CoordinatorConfiguration, bundle: ModelBundle, transport: any MessageTransport, planner: (any Planner)? = nil,
        logger: Logger? = nil
    ) throws {
        self.configuration = configuration
        self.bundle = bundle
        self.transport = transport
        self.logger =
            logger
            ?? {
                var logger = Logger(label: "cleave.coordinator.\(configuration.id)")
                logger.logLevel = .notice
                return logger
            }()
        let manifest = bundle.manifest
        let split = try SplitPlanner(bundle: bundle)
        self.planner = planner ?? split
        served = split.base
        let tail = InferenceSession(model: try Model(serialized: Data(bundle.tail), source: "tail of \(manifest.name)"), threads: 1)
        let full = InferenceSession(model: try Model(serialized: Data(bundle.full), source: "\(manifest.name)"), threads: 1)
        tailBatcher = TailBatcher(
            session: tail, inputName: manifest.cutTensor, maximumBatch: configuration.maximumBatch, maximumWait: configuration.maximumWait,
            workers: configuration.threads, batchTime: configuration.emulatedBatchTime)
        fullBatcher = TailBatcher(
            session: full, inputName: manifest.inputName, maximumBatch: configuration.maximumBatch, maximumWait: configuration.maximumWait,
            workers: configuration.threads, batchTime: configuration.emulatedBatchTime)
        headDigestPrefix = stride(from: 0, to: 16, by: 2).map { offset in
            let start = manifest.head.sha256.index(manifest.head.sha256.startIndex, offsetBy: offset)
            return UInt8(manifest.head.sha256[start..<manifest.head.sha256.index(start, offsetBy: 2)], radix: 16) ?? 0
        }
    }

    // MARK: - Lifecycle

    /// Connects, publishes the model artifacts (retained) and starts serving.
    public func start() async throws {
        eventTask = try await transport.connect(deliveringEventsTo: { [weak self] event in await self?.handle(event) })
    }

    /// Stops taking new frames (leaves the shared subscription: the broker hands them to the
    /// other coordinators) and waits, at most `timeout`, until the frames being computed are answered.
    public func drain(timeout: Duration) async {
        try? transport.unsubscribe(Topic.sharedInfer)
        draining = true
        let deadline = ContinuousClock.now + timeout
        while serving > 0 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        logger.notice("drained: \(serving) frames unanswered")
    }

    /// Disconnects.
    public func stop() {
        transport.disconnect()
        eventTask?.cancel()
    }

    /// Devices currently online.
    public var onlineDevices: [String] { devices.values.filter { $0.status == .online }.map(\.id).sorted() }

    // MARK: - Events

    private func handle(_ event: MQTTEvent) async {
        switch event {
        case .connected:
            connected = true
            do {
                for (sha, bytes) in [(served.full.sha256, bundle.full), (served.head.sha256, bundle.head)] {
                    try transport.publish(MQTTMessage(topic: Topic.model(sha256: sha).path, payload: bytes, qos: 1, retain: true))
                }
                try transport.subscribe(Topic.allDeviceStates, qos: 1)
                try transport.subscribe(Topic.sharedInfer, qos: 1)
                logger.notice("serving \(served.model) (cut at \(served.cutTensor)); batches up to \(configuration.maximumBatch)")
            } catch {
                logger.error("starting to serve failed: \(error)")
            }
        case .refused(let code):
            logger.error("broker refused the connection (reason \(code))")
        case .disconnected(let code):
            connected = false
            if code != 0 { logger.warning("no broker connection (code \(code): \(MQTTError.reason(code))); reconnecting") }
        case .message(let message):
            switch Topic(parsing: message.topic) {
            case .deviceState(let device): receiveState(message, device: device)
            case .infer(let device) where !draining:
                guard servingPerDevice[device, default: 0] < configuration.maximumInFlightPerDevice else {
                    statistics.busy += 1
                    let limit = configuration.maximumInFlightPerDevice
                    let busy = Rejection(.busy, "\(limit) frames of \(device) are being served; compute this one locally or send it later")
                    reply(
                        InferenceResult(
                            requestID: RequestID.decode(message.correlationData) ?? 0, prediction: nil, confidence: nil, rejection: busy,
                            coordinator: configuration.id, batchSize: 0), to: message)
                    return
                }
                let work = message
                servingPerDevice[device, default: 0] += 1
                Task {
                    await self.serve(work, device: device)
                    self.finishedServing(device)
                }
            default: logger.debug("ignored a message on \(message.topic)")
            }
        }
    }

    private func finishedServing(_ device: String) {
        servingPerDevice[device, default: 1] -= 1
        if servingPerDevice[device] == 0 { servingPerDevice[device] = nil }
    }

    private func receiveState(_ message: MQTTMessage, device: String) {
        guard !message.payload.isEmpty else { return }
        guard let state = try? JSONDecoder().decode(DeviceState.self, from: Data(message.payload)) else {
            logger.warning("unreadable state from \(device)")
            return
        }
        let previous = devices[device]?.status
        devices[device] = state
        statistics.devicesOnline = devices.values.filter { $0.status == .online }.count
        guard state.status != previous else { return }
        logger.notice("device \(device) is \(state.status.rawValue)\(state.profile.map { " (\($0.name))" } ?? "")")
        guard state.status == .online else { return }
        do {
            let assignment = try planner.assignment(for: state)
            if let patch = assignment.patch {
                logger.notice(
                    "device \(device): head patch by patch, stage ends at '\(patch.stageEnd)', grid \(patch.rows)x\(patch.columns), peak \(patch.peakBytes) bytes of its \(patch.budgetBytes)-byte activation budget"
                )
            }
            let topic = Topic.deviceControl(device: device).path
            var control = [UInt8](try JSONEncoder().encode(ControlMessage(assignment: assignment, nonce: state.nonce)))
            if let key = configuration.signingKey { control = try key.seal(control, topic: topic, issued: issueClock.next()) }
            try transport.publish(MQTTMessage(topic: topic, payload: control, qos: 1, retain: true))
        } catch {
            logger.error("no assignment for \(device): \(error)")
        }
    }

    // MARK: - Serving frames

    private func serve(_ message: MQTTMessage, device: String) async {
        let requestID = RequestID.decode(message.correlationData)
        let key = Self.requestKey(device: device, requestID: requestID, frame: message.payload)
        if requestID != nil, let cached = recent[key] {
            statistics.duplicates += 1
            reply(cached, to: message)
            return
        }
        let mode = InferenceMode(rawValue: message.userProperties[Topic.modeProperty] ?? "split") ?? .split
        let shape = [1] + (mode == .offload ? served.inputShape : served.cutShape)
        let result: InferenceResult
        do {
            guard message.payload.count <= configuration.maximumFrameBytes else {
                throw Rejection(.frameTooLarge, "frame size is \(message.payload.count), the limit is \(configuration.maximumFrameBytes)")
            }
            let limits = FrameLimits(maximumPayloadBytes: configuration.maximumFrameBytes, maximumElements: shape.reduce(1, *))
            let frame = try BottleneckCodec.decode(message.payload, expectedShape: shape, limits: limits)
            if let context = frame.context, context.modelDigest != headDigestPrefix {
                let digest = context.modelDigest.map { String(format: "%02x", $0) }.joined()
                throw Rejection(.wrongModel, "frame is for model \(digest)…, this coordinator serves \(served.head.sha256.prefix(16))…")
            }
            if let requestID, frame.requestID != requestID {
                throw Rejection(.mismatchedRequest, "frame request id \(frame.requestID) differs from correlation data \(requestID)")
            }
            var features = frame.tensor
            if frame.region != nil {
                guard mode == .split, requestID != nil else {
                    throw Rejection(.malformedFrame, "only split features with correlation data are sent in parts")
                }
                // A part sent again while its assembled request computes: that answer will do.
                if inFlight[key] != nil {
                    statistics.duplicates += 1
                    return
                }
                guard let whole = try assemble(frame, key: key, shape: shape) else { return }
                features = whole
            }
            // A copy (a retry, a redelivery) of a request still being computed waits for that
            // answer instead of computing it again.
            if requestID != nil, inFlight[key] != nil {
                statistics.duplicates += 1
                inFlight[key]!.append(message)
                return
            }
            if requestID != nil { inFlight[key] = [] }
            let (logits, batchSize) = try await (mode == .offload ? fullBatcher : tailBatcher).submit(features)
            let (best, confidence) = Classification.top(logits.scalars(as: Float.self))
            result = InferenceResult(
                requestID: frame.requestID, prediction: best, confidence: confidence, coordinator: configuration.id, batchSize: batchSize)
            statistics.answered += 1
            if let log = configuration.requestLog {
                do {
                    try SystemCall.append(log, Array("\(key) \(mode.rawValue) \(batchSize)\n".utf8), durable: false)
                } catch {
                    logger.error("cannot write the request log: \(error)")
                }
            }
        } catch {
            let rejection =
                error as? Rejection ?? (error is FrameError ? Rejection(.malformedFrame, "\(error)") : Rejection(.computationFailed, "\(error)"))
            statistics.rejected += 1
            logger.warning("rejected frame from \(device) (\(message.payload.count) bytes): \(rejection)")
            result = InferenceResult(
                requestID: requestID ?? 0, prediction: nil, confidence: nil, rejection: rejection, coordinator: configuration.id, batchSize: 0)
        }
        if requestID != nil {
            // Only answers are remembered: a retry of a rejected frame is judged again (the
            // rejection may have been transient: a rollout, a tail that failed once).
            if result.prediction != nil { remember(result, key: key) }
            for copy in inFlight.removeValue(forKey: key) ?? [] { reply(result, to: copy) }
        }
        reply(result, to: message)
    }

    /// Adds a part to its request's assembly; the whole tensor once every part is in, nil while
    /// parts are missing. A part that does not fit (overlapping, another part count) drops the
    /// request's parts and is rejected, so the agent computes it locally.
    private func assemble(_ part: DecodedFrame, key: String, shape: [Int]) throws -> Tensor? {
        let now = ContinuousClock.now
        partial = partial.filter { now - $0.value.since < partsTimeout }
        if partial[key] == nil, partial.count >= partsCapacity, let oldest = partial.min(by: { $0.value.since < $1.value.since }) {
            partial[oldest.key] = nil
        }
        var entry = partial[key] ?? (PartAssembly(shape: shape, parts: part.region?.parts ?? 1), now)
        do {
            if try !entry.assembly.add(part) { statistics.duplicates += 1 }
        } catch {
            partial[key] = nil
            throw Rejection(.malformedFrame, "\(error)")
        }
        guard entry.assembly.isComplete else {
            partial[key] = entry
            return nil
        }
        partial[key] = nil
        statistics.assembled += 1
        return entry.assembly.tensor
    }

    private func remember(_ result: InferenceResult, key: String) {
        recent[key] = result
        if recentOrder.count < recentCapacity {
            recentOrder.append(key)
        } else {
            recent[recentOrder[recentNext]] = nil
            recentOrder[recentNext] = key
            recentNext = (recentNext + 1) % recentCapacity
        }
    }

    /// What identifies a request in the answer cache and among those in flight: the device, the
    /// request id and the frame's own CRC-32C (its last 4 bytes), so that a reused id with other
    /// content — a board whose counter started over, two processes under one device id — is a
    /// new request, not the old one's answer. A part of a streamed request (region flag, bit 4
    /// of the flags byte) is keyed by device and id alone: its parts differ, its answer is one.
    static func requestKey(device: String, requestID: UInt64?, frame: [UInt8]) -> String {
        let base = "\(device)/\(requestID.map(String.init) ?? "-")"
        guard frame.count >= 7, frame[2] & 0x10 == 0 else { return base }
        return base + "/" + frame.suffix(4).map { String($0, radix: 16) }.joined(separator: ".")
    }

    /// Answers on the results topic of the device whose infer topic the request came on (the
    /// broker's ACL lets a device publish only there), whatever response topic the request
    /// names: a device cannot make the coordinator write into another device's results.
    private func reply(_ result: InferenceResult, to request: MQTTMessage) {
        guard case .infer(let device) = Topic(parsing: request.topic), let payload = try? JSONEncoder().encode(result) else { return }
        let topic = Topic.results(device: device).path
        if let named = request.responseTopic, named != topic {
            logger.warning("request \(result.requestID) from \(device) names response topic \(named); answering on \(topic)")
        }
        do {
            try transport.publish(MQTTMessage(topic: topic, payload: [UInt8](payload), qos: 1, correlationData: request.correlationData))
        } catch {
            logger.error("cannot answer on \(topic): \(error)")
        }
    }
}
