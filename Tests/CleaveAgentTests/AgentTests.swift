import CleaveCodec
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Synchronization
import Testing

@testable import CleaveAgent

/// The agent's logic on the in-memory broker, against a scripted coordinator: assignment,
/// artifact verification, retries, the offline queue, duplicate answers, a broker that goes away.
@Suite struct AgentTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path
    static let bundle = TinySplitModel.bundle
    static let image = Tensor(shape: [1, 1, 28, 28], scalars: (0..<784).map { Float($0 % 29) / 29 })

    /// A coordinator written out by hand on a raw transport: it publishes the artifacts and the
    /// assignment, and answers each frame as `answer` says (nil: ignore that copy).
    final class ScriptedCoordinator: Sendable {
        let transport: InMemoryTransport
        let received = Received()
        private let task: Task<Void, Never>

        init(
            broker: InMemoryBroker, device: String, rejecting reason: Rejection.Reason = .wrongModel,
            answer: @escaping @Sendable (_ requestID: UInt64, _ copy: Int) -> [Int?]
        ) throws {
            let bundle = try AgentTests.bundle.get()
            let manifest = bundle.manifest
            let assignment = try ScriptedCoordinatorAssignment.make(bundle)
            transport = broker.makeTransport(clientID: "scripted-coordinator")
            try transport.connect()
            try transport.publish(MQTTMessage(topic: Topic.model(sha256: manifest.full.sha256).path, payload: bundle.full, qos: 1, retain: true))
            try transport.publish(MQTTMessage(topic: Topic.model(sha256: manifest.head.sha256).path, payload: bundle.head, qos: 1, retain: true))
            let control = try JSONEncoder().encode(ControlMessage(assignment: assignment))
            try transport.publish(MQTTMessage(topic: Topic.deviceControl(device: device).path, payload: [UInt8](control), qos: 1, retain: true))
            try transport.subscribe(Topic.sharedInfer, qos: 1)
            let events = transport.events
            let transport = self.transport
            let received = self.received
            task = Task {
                for await event in events {
                    guard case .message(let message) = event, let id = RequestID.decode(message.correlationData) else { continue }
                    let copy = received.ids.withLock { list in
                        list.append(id)
                        return list.filter { $0 == id }.count
                    }
                    for prediction in answer(id, copy) {
                        // nil: a rejection, as a coordinator serving other weights sends.
                        let result = InferenceResult(
                            requestID: id, prediction: prediction, confidence: prediction == nil ? nil : 1,
                            rejection: prediction == nil ? Rejection(reason, "scripted rejection") : nil, coordinator: "scripted", batchSize: 1)
                        try? transport.publish(
                            MQTTMessage(
                                topic: message.responseTopic ?? "", payload: [UInt8](try! JSONEncoder().encode(result)), qos: 1,
                                correlationData: message.correlationData))
                    }
                }
            }
        }

        deinit { task.cancel() }
    }

    /// Waits (at most 60 s: a loaded machine runs every suite at once) until `condition` holds.
    func eventually(_ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while await !condition() {
            guard ContinuousClock.now < deadline else { throw AgentError(description: "condition not met within 60 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func makeAgent(
        _ broker: InMemoryBroker, _ id: String, timeout: Duration = .seconds(60), fallback: Bool = false, offline: Int = 64, cache: String? = nil
    ) throws -> Agent {
        let profile = try DeviceProfile.load("\(Self.repository)/devices/generic.yaml")
        let configuration = AgentConfiguration(
            deviceID: id, profile: profile, threads: 1, requestTimeout: timeout, modelCache: cache, fallbackToLocal: fallback,
            offlineQueueLimit: offline, retryInterval: .milliseconds(50))
        return Agent(configuration, transport: broker.makeTransport(clientID: id, will: Agent.offlineState(id)))
    }

    @Test func takesTheAssignmentAndServesSplitRequests() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a1") { _, _ in [7] }
        let agent = try makeAgent(broker, "a1")
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        let outcome = await agent.infer(Self.image, mode: .split)
        #expect(outcome.prediction == 7 && outcome.failure == nil, "\(outcome.error ?? "")")
        #expect(outcome.bytesSent > 0 && outcome.bytesSent < 100, "an int4 frame of a 4×4×4 cut")
        let local = await agent.infer(Self.image, mode: .local)
        #expect(local.prediction != nil && local.mode == .local)
        // The retained online state carries the profile.
        func retainedState() throws -> DeviceState {
            let message = try #require(broker.retained(Topic.deviceState(device: "a1").path))
            return try JSONDecoder().decode(DeviceState.self, from: Data(message.payload))
        }
        let state = try retainedState()
        #expect(state.status == .online && state.profile?.name == "generic")
        await agent.stop()
        let offline = try retainedState()
        #expect(offline.status == .offline)
        _ = coordinator
    }

    @Test func refusesAnArtifactWhoseHashDiffers() async throws {
        let broker = InMemoryBroker()
        let bundle = try Self.bundle.get()
        // A forged full model is retained under the real hash before the coordinator starts.
        let forger = broker.makeTransport(clientID: "forger")
        try forger.connect()
        // Another valid model (the tail) under the whole model's hash: it would load, so only the
        // hash check can keep it out.
        let forged = bundle.tail
        try forger.publish(MQTTMessage(topic: Topic.model(sha256: bundle.manifest.full.sha256).path, payload: forged, qos: 1, retain: true))
        let agent = try makeAgent(broker, "a2")
        try await agent.start()
        let control = try JSONEncoder().encode(ControlMessage(assignment: try ScriptedCoordinatorAssignment.make(bundle)))
        try forger.publish(MQTTMessage(topic: Topic.deviceControl(device: "a2").path, payload: [UInt8](control), qos: 1, retain: true))
        try await Task.sleep(for: .milliseconds(300))
        await #expect(throws: AgentError.self) { try await agent.waitUntilReady(timeout: .milliseconds(100)) }
        // The real artifacts arrive: the agent verifies them and becomes ready.
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a2") { _, _ in [1] }
        try await agent.waitUntilReady(timeout: .seconds(60))
        #expect(await agent.infer(Self.image, mode: .split).prediction == 1)
        let whole = InferenceSession(model: try Model(serialized: Data(bundle.full)), threads: 1)
        let expected = Classification.top(try #require(try whole.run(["image": Self.image])["logits"]).scalars(as: Float.self)).index
        let local = await agent.infer(Self.image, mode: .local)
        #expect(local.prediction == expected, "the whole model is the real one: \(local.error ?? "")")
        await agent.stop()
        _ = coordinator
    }

    @Test func retriesAnUnansweredRequest() async throws {
        let broker = InMemoryBroker()
        // The first copy of every request is lost; the retry is answered.
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a3") { _, copy in copy == 1 ? [] : [3] }
        let agent = try makeAgent(broker, "a3")
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        let outcome = await agent.infer(Self.image, mode: .offload)
        #expect(outcome.prediction == 3, "\(outcome.error ?? "")")
        #expect(await agent.statistics.retries >= 1)
        #expect(outcome.latencyMilliseconds >= 40, "answered by the retry after its 50 ms interval")
        await agent.stop()
        _ = coordinator
    }

    @Test func duplicateAnswersReachTheCallerOnce() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a4") { _, _ in [5, 5, 5] }
        let agent = try makeAgent(broker, "a4")
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        for _ in 0..<3 { #expect(await agent.infer(Self.image, mode: .split).prediction == 5) }
        try await eventually { await agent.statistics.droppedAnswers >= 6 }
        let statistics = await agent.statistics
        #expect(statistics.answered[.split] == 3)
        #expect(statistics.droppedAnswers >= 6, "two extra answers per request (and per retry, on a slow machine), dropped")
        await agent.stop()
        _ = coordinator
    }

    @Test func requestsWaitOutABrokerOutage() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a5") { _, _ in [2] }
        let agent = try makeAgent(broker, "a5", offline: 2)
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        broker.setAvailable(false)
        try await eventually { await !agent.isConnected }
        // Three requests during the outage: the offline queue holds two, the oldest leaves it.
        async let first = agent.infer(Self.image, mode: .split)
        try await eventually { await agent.waitingRemote == 1 }
        async let second = agent.infer(Self.image, mode: .split)
        try await eventually { await agent.waitingRemote == 2 }
        async let third = agent.infer(Self.image, mode: .split)
        try await eventually { await agent.statistics.fallbacks + agent.statistics.failed >= 1 }
        broker.setAvailable(true)
        let outcomes = await [first, second, third]
        #expect(outcomes[0].failure == .offlineQueueFull(limit: 2), "\(outcomes[0].error ?? "answered")")
        #expect(outcomes[1].prediction == 2 && outcomes[2].prediction == 2, "queued requests go out on reconnect")
        #expect(await agent.statistics.connects == 2)
        await agent.stop()
        _ = coordinator
    }

    @Test func noAnswerFallsBackToLocalOrFails() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a6") { _, _ in [] }
        let strict = try makeAgent(broker, "a6", timeout: .milliseconds(150))
        try await strict.start()
        try await strict.waitUntilReady(timeout: .seconds(60))
        let failed = await strict.infer(Self.image, mode: .split)
        guard case .noAnswer = failed.failure else {
            Issue.record("expected no answer, got \(failed.error ?? "a prediction")")
            return
        }
        await strict.stop()
        let lenient = try makeAgent(broker, "a6", timeout: .milliseconds(150), fallback: true)
        try await lenient.start()
        try await lenient.waitUntilReady(timeout: .seconds(60))
        let fallback = await lenient.infer(Self.image, mode: .split)
        #expect(fallback.prediction != nil && fallback.fallback == .split && fallback.mode == .local)
        await lenient.stop()
        _ = coordinator
    }

    /// Two agents on one board share a model cache: when the artifacts arrive, the other agent
    /// may have written them already. They are then no news to this agent's store, and it must
    /// still load them and become ready (it waited for ever, seen in the harness on a cold cache).
    @Test func artifactsAnotherAgentCachedFirstStillMakeItReady() async throws {
        let broker = InMemoryBroker()
        let bundle = try Self.bundle.get()
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-shared-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let coordinator = broker.makeTransport(clientID: "hand-coordinator")
        try coordinator.connect()
        let control = try JSONEncoder().encode(ControlMessage(assignment: try ScriptedCoordinatorAssignment.make(bundle)))
        try coordinator.publish(MQTTMessage(topic: Topic.deviceControl(device: "a8").path, payload: [UInt8](control), qos: 1, retain: true))
        let agent = try makeAgent(broker, "a8", cache: cache)
        try await agent.start()
        try await eventually { broker.subscriptions(of: "a8").contains(Topic.model(sha256: bundle.manifest.head.sha256).path) }
        // The other agent's copies land in the cache first; then the broker delivers ours.
        try SystemCall.makeDirectories(cache)
        try SystemCall.writeFileAtomically("\(cache)/\(bundle.manifest.full.sha256).onnx", bundle.full)
        try SystemCall.writeFileAtomically("\(cache)/\(bundle.manifest.head.sha256).onnx", bundle.head)
        try coordinator.publish(MQTTMessage(topic: Topic.model(sha256: bundle.manifest.full.sha256).path, payload: bundle.full, qos: 1, retain: true))
        try coordinator.publish(MQTTMessage(topic: Topic.model(sha256: bundle.manifest.head.sha256).path, payload: bundle.head, qos: 1, retain: true))
        try await agent.waitUntilReady(timeout: .seconds(30))
        #expect(await agent.infer(Self.image, mode: .local).prediction != nil)
        await agent.stop()
    }

    /// A coordinator's rejection is a failure of the remote path: with local fallback the
    /// whole model answers here; without it the outcome carries the coordinator's reason.
    @Test func aRejectionFallsBackToLocalWhenAllowed() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a9") { _, _ in [nil] }
        let strict = try makeAgent(broker, "a9")
        try await strict.start()
        try await strict.waitUntilReady(timeout: .seconds(60))
        let refused = await strict.infer(Self.image, mode: .split)
        #expect(refused.failure == .rejected(Rejection(.wrongModel, "scripted rejection")), "\(refused.error ?? "answered")")
        await strict.stop()
        let lenient = try makeAgent(broker, "a9", fallback: true)
        try await lenient.start()
        try await lenient.waitUntilReady(timeout: .seconds(60))
        let local = await lenient.infer(Self.image, mode: .split)
        #expect(local.prediction != nil && local.fallback == .split && local.mode == .local, "\(local.error ?? "")")
        #expect(await lenient.statistics.fallbacks == 1)
        await lenient.stop()
        _ = coordinator
    }

    /// An answer is matched by the correlation data the coordinator echoes, not by the id in
    /// its JSON alone: a result without it (or with another) is dropped, so a forger that
    /// guesses the next id cannot answer for the coordinator.
    @Test func aResultWithoutMatchingCorrelationDataIsDropped() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a10") { _, _ in [] }
        let agent = try makeAgent(broker, "a10", timeout: .milliseconds(400))
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        let forger = broker.makeTransport(clientID: "forger")
        try forger.connect()
        let forging = Task {
            while !Task.isCancelled {
                for id in coordinator.received.ids.withLock({ $0 }) {
                    let forged = InferenceResult(requestID: id, prediction: 9, confidence: 1, coordinator: "forger", batchSize: 1)
                    for correlation in [nil, RequestID.encode(id &+ 1)] {
                        try? forger.publish(
                            MQTTMessage(
                                topic: Topic.results(device: "a10").path, payload: [UInt8](try JSONEncoder().encode(forged)), qos: 1,
                                correlationData: correlation))
                    }
                }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        let outcome = await agent.infer(Self.image, mode: .split)
        forging.cancel()
        guard case .noAnswer = outcome.failure else {
            Issue.record("a forged answer was taken: \(outcome.prediction.map(String.init) ?? outcome.error ?? "?")")
            return
        }
        await agent.stop()
    }

    /// "Busy" without local fallback means "later": the request waits and its retry is
    /// answered (the fault suite lost 26 requests when an offline queue of 100 met a
    /// coordinator's limit of 64 and busy was final).
    @Test func busyWithoutFallbackWaitsForTheRetry() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a11", rejecting: .busy) { _, copy in copy == 1 ? [nil] : [4] }
        let agent = try makeAgent(broker, "a11")
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        let outcome = await agent.infer(Self.image, mode: .split)
        #expect(outcome.prediction == 4 && outcome.failure == nil, "\(outcome.error ?? "")")
        let statistics = await agent.statistics
        #expect(statistics.busy == 1 && statistics.retries >= 1)
        await agent.stop()
        _ = coordinator
    }

    /// A stopped agent fails a waiting request and every later remote one at once, with
    /// `.stopped`, instead of keeping them until their timeout (a testbed that stops on Ctrl-C
    /// would wait that long).
    @Test func aStoppedAgentFailsRemoteRequestsAtOnce() async throws {
        let broker = InMemoryBroker()
        let coordinator = try ScriptedCoordinator(broker: broker, device: "a7") { _, _ in [] }
        let agent = try makeAgent(broker, "a7", timeout: .seconds(30))
        try await agent.start()
        try await agent.waitUntilReady(timeout: .seconds(60))
        async let waiting = agent.infer(Self.image, mode: .split)
        try await eventually { await agent.waitingRemote == 1 }
        await agent.stop()
        #expect(await waiting.failure == .stopped)
        let started = ContinuousClock.now
        let later = await agent.infer(Self.image, mode: .offload)
        #expect(later.failure == .stopped && ContinuousClock.now - started < .seconds(1), "\(later.error ?? "answered")")
        _ = coordinator
    }
}

/// Request ids a scripted coordinator has seen, one entry per copy.
final class Received: Sendable {
    let ids = Mutex<[UInt64]>([])
}

/// The assignment the scripted coordinator sends, for tests that send it themselves.
enum ScriptedCoordinatorAssignment {
    static func make(_ bundle: ModelBundle) throws -> Assignment {
        let manifest = bundle.manifest
        return Assignment(
            model: manifest.name, full: ArtifactReference(sha256: manifest.full.sha256, bytes: bundle.full.count),
            head: ArtifactReference(sha256: manifest.head.sha256, bytes: bundle.head.count), inputName: manifest.inputName,
            inputShape: manifest.inputShape, cutTensor: manifest.cutTensor, cutShape: manifest.cutShape,
            codec: try CodecName(validating: manifest.codec), zstdLevel: manifest.zstdLevel)
    }
}
