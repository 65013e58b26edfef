import CleaveCodec
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveCoordinator

/// The coordinator's logic on the in-memory broker, with a device written out by hand:
/// planning, artifacts, answers, the duplicate cache and rejections.
@Suite struct CoordinatorTests {
    static let modelFolder = SplitServingTests.modelFolder

    /// Messages a raw device has received, in order.
    actor Inbox {
        private var messages: [MQTTMessage] = []
        func add(_ message: MQTTMessage) { messages.append(message) }
        func take(_ topic: String) -> MQTTMessage? {
            guard let index = messages.firstIndex(where: { $0.topic == topic }) else { return nil }
            return messages.remove(at: index)
        }
    }

    /// A raw device: announces itself and collects everything sent to it.
    struct Device {
        let transport: InMemoryTransport
        let id: String
        let inbox = Inbox()

        init(_ broker: InMemoryBroker, id: String, profile: DeviceProfile?) throws {
            self.id = id
            transport = broker.makeTransport(clientID: id)
            let events = transport.events
            let inbox = self.inbox
            Task {
                for await event in events { if case .message(let message) = event { await inbox.add(message) } }
            }
            try transport.connect()
            try transport.subscribe(Topic.results(device: id).path, qos: 1)
            try transport.subscribe(Topic.deviceControl(device: id).path, qos: 1)
            let state = try JSONEncoder().encode(DeviceState(id: id, status: .online, profile: profile))
            try transport.publish(MQTTMessage(topic: Topic.deviceState(device: id).path, payload: [UInt8](state), qos: 1, retain: true))
        }

        /// A frame on this device's infer topic, the answer asked on `responseTopic` (its own results topic by default).
        func send(_ frame: [UInt8], requestID: UInt64, mode: InferenceMode = .split, responseTopic: String? = nil) throws {
            try transport.publish(
                MQTTMessage(
                    topic: Topic.infer(device: id).path, payload: frame, qos: 1, responseTopic: responseTopic ?? Topic.results(device: id).path,
                    correlationData: RequestID.encode(requestID), userProperties: [Topic.modeProperty: mode.rawValue]))
        }

        /// The next message on `topic`, waiting at most 30 seconds (a loaded machine runs every suite at once).
        func next(on topic: String) async -> MQTTMessage? {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if let message = await inbox.take(topic) { return message }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return nil
        }
    }

    struct Refusing: Planner {
        func assignment(for device: DeviceState) throws(PlanningError) -> Assignment { throw PlanningError("no plan for \(device.id)") }
    }

    @Test func assignsAnswersAndAnswersRepeatsFromItsCache() async throws {
        let broker = InMemoryBroker()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let coordinator = try Coordinator(CoordinatorConfiguration(id: "c-mem"), bundle: bundle, transport: broker.makeTransport(clientID: "c-mem"))
        try await coordinator.start()
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        let device = try Device(broker, id: "d1", profile: profile)
        let control = try #require(await device.next(on: Topic.deviceControl(device: "d1").path))
        let assignment = try #require(try JSONDecoder().decode(ControlMessage.self, from: Data(control.payload)).assignment)
        #expect(assignment.codec.rawValue == bundle.manifest.codec && assignment.head.sha256 == bundle.manifest.head.sha256)
        #expect(broker.retained(Topic.model(sha256: assignment.full.sha256).path)?.payload == bundle.full, "artifacts retained")

        let features = Tensor(shape: [1] + assignment.cutShape, scalars: [Float](repeating: 0.5, count: assignment.cutShape.reduce(1, *)))
        let frame = BottleneckCodec.encode(features, requestID: 42, options: FrameOptions(codec: .int4))
        try device.send(frame, requestID: 42)
        try device.send(frame, requestID: 42)
        let results = Topic.results(device: "d1").path
        let first = try JSONDecoder().decode(InferenceResult.self, from: Data(try #require(await device.next(on: results)).payload))
        let second = try JSONDecoder().decode(InferenceResult.self, from: Data(try #require(await device.next(on: results)).payload))
        #expect(first.prediction != nil && first == second)
        let statistics = await coordinator.statistics
        #expect(statistics.answered == 1 && statistics.duplicates == 1)

        // The same id with other content (a board whose counter started over) is a new
        // request: computed, not answered from the cache.
        let other = BottleneckCodec.encode(
            Tensor(shape: [1] + assignment.cutShape, scalars: (0..<assignment.cutShape.reduce(1, *)).map { Float($0 % 7) / 7 }), requestID: 42,
            options: FrameOptions(codec: .int4))
        #expect(other != frame)
        try device.send(other, requestID: 42)
        _ = try #require(await device.next(on: results))
        let reused = await coordinator.statistics
        #expect(reused.answered == 2 && reused.duplicates == 1, "a reused id with another frame is computed")

        try device.send([1, 2, 3], requestID: 43)
        let rejected = try JSONDecoder().decode(InferenceResult.self, from: Data(try #require(await device.next(on: results)).payload))
        #expect(rejected.prediction == nil && rejected.rejection?.reason == .malformedFrame && rejected.requestID == 43)
        #expect(await coordinator.statistics.rejected == 1)
        // A retry of a rejected frame is judged again, not answered from the cache.
        try device.send([1, 2, 3], requestID: 43)
        _ = try #require(await device.next(on: results))
        let after = await coordinator.statistics
        #expect(after.rejected == 2 && after.duplicates == 1, "rejected \(after.rejected), duplicates \(after.duplicates)")
        await coordinator.stop()
    }

    /// A device that names another device's results topic gets the answer on its own: it
    /// cannot make the coordinator write forged answers into another device's results.
    @Test func answersGoToTheSendersResultsTopicOnly() async throws {
        let broker = InMemoryBroker()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let coordinator = try Coordinator(
            CoordinatorConfiguration(id: "c-topic"), bundle: bundle, transport: broker.makeTransport(clientID: "c-topic"))
        try await coordinator.start()
        let attacker = try Device(broker, id: "d3", profile: try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml"))
        let victim = try Device(broker, id: "d4", profile: nil)
        let control = try #require(await attacker.next(on: Topic.deviceControl(device: "d3").path))
        let assignment = try #require(try JSONDecoder().decode(ControlMessage.self, from: Data(control.payload)).assignment)
        let features = Tensor(shape: [1] + assignment.cutShape, scalars: [Float](repeating: 0.25, count: assignment.cutShape.reduce(1, *)))
        try attacker.send(
            BottleneckCodec.encode(features, requestID: 7, options: FrameOptions(codec: .int4)), requestID: 7,
            responseTopic: Topic.results(device: "d4").path)
        let answer = try #require(await attacker.next(on: Topic.results(device: "d3").path), "answered on the sender's own topic")
        #expect(RequestID.decode(answer.correlationData) == 7)
        #expect(await victim.inbox.take(Topic.results(device: "d4").path) == nil, "nothing on the victim's results topic")
        await coordinator.stop()
    }

    /// A device may have only so many frames in flight: the rest are answered `busy` at once,
    /// without being decoded, and the ones accepted are answered as usual.
    @Test func framesBeyondTheDevicesLimitAreAnsweredBusy() async throws {
        let broker = InMemoryBroker()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        // Frames wait up to 200 ms for a batch, so the first two are still in flight when the rest arrive.
        let coordinator = try Coordinator(
            CoordinatorConfiguration(id: "c-busy", maximumBatch: 16, maximumWait: .milliseconds(200), maximumInFlightPerDevice: 2), bundle: bundle,
            transport: broker.makeTransport(clientID: "c-busy"))
        try await coordinator.start()
        let device = try Device(broker, id: "d5", profile: try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml"))
        let control = try #require(await device.next(on: Topic.deviceControl(device: "d5").path))
        let assignment = try #require(try JSONDecoder().decode(ControlMessage.self, from: Data(control.payload)).assignment)
        let features = Tensor(shape: [1] + assignment.cutShape, scalars: [Float](repeating: 0.5, count: assignment.cutShape.reduce(1, *)))
        for id in 1...10 as ClosedRange<UInt64> {
            try device.send(BottleneckCodec.encode(features, requestID: id, options: FrameOptions(codec: .int4)), requestID: id)
        }
        var results: [InferenceResult] = []
        for _ in 0..<10 {
            let message = try #require(await device.next(on: Topic.results(device: "d5").path))
            results.append(try JSONDecoder().decode(InferenceResult.self, from: Data(message.payload)))
        }
        let answered = results.filter { $0.prediction != nil }.map(\.requestID).sorted()
        let busy = results.filter { $0.rejection?.reason == .busy }.map(\.requestID).sorted()
        #expect(answered == [1, 2] && busy == Array(3...10), "answered \(answered), busy \(busy)")
        #expect(await coordinator.statistics.busy == 8)
        // Once they are answered, the device may send again.
        try device.send(BottleneckCodec.encode(features, requestID: 11, options: FrameOptions(codec: .int4)), requestID: 11)
        let next = try #require(await device.next(on: Topic.results(device: "d5").path))
        #expect(try JSONDecoder().decode(InferenceResult.self, from: Data(next.payload)).prediction != nil)
        await coordinator.stop()
    }

    @Test func aPlannerThatRefusesSendsNoAssignment() async throws {
        let broker = InMemoryBroker()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let coordinator = try Coordinator(
            CoordinatorConfiguration(id: "c-refuse"), bundle: bundle, transport: broker.makeTransport(clientID: "c-refuse"), planner: Refusing())
        try await coordinator.start()
        _ = try Device(broker, id: "d2", profile: nil)
        try await Task.sleep(for: .milliseconds(100))
        #expect(broker.retained(Topic.deviceControl(device: "d2").path) == nil)
        #expect(await coordinator.onlineDevices == ["d2"])
        #expect(throws: PlanningError.self) { try SplitPlanner(bundle: bundle).assignment(for: DeviceState(id: "d2", status: .online, profile: nil)) }
        await coordinator.stop()
    }

    /// With the shipped profiles, only the Pi Zero 2 W's activation budget is too small for the
    /// head layer by layer: it gets a patch plan that fits, the others none.
    @Test func thePlannerGivesEachProfileTheHeadPlanItsBudgetAllows() throws {
        let planner = try SplitPlanner(bundle: try ModelBundle(directory: Self.modelFolder))
        let devices = URL(fileURLWithPath: Self.modelFolder).appendingPathComponent("../../../devices").standardizedFileURL.path
        let names = try FileManager.default.contentsOfDirectory(atPath: devices).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 6)
        for name in names {
            let profile = try DeviceProfile.load("\(devices)/\(name)")
            let assignment = try planner.assignment(for: DeviceState(id: profile.name, status: .online, profile: profile))
            if profile.name == "raspberry-pi-zero-2w" {
                let patch = try #require(assignment.patch, "the Pi Zero 2 W's 64 KiB budget needs a patch plan")
                #expect(patch.peakBytes <= 64 * 1024 && patch.budgetBytes == 64 * 1024)
                #expect(patch.rows >= 2 && patch.columns >= 2)
            } else {
                #expect(assignment.patch == nil, "\(profile.name) runs the head layer by layer")
            }
        }
        var tiny = try DeviceProfile.load("\(devices)/raspberry-pi-zero-2w.yaml")
        tiny.activationMemoryKiB = 1
        #expect {
            try planner.assignment(for: DeviceState(id: "tiny", status: .online, profile: tiny))
        } throws: { error in
            "\(error)".contains("tiny") && "\(error)".contains("smallest feasible budget is")
        }
    }

    @Test func anUnknownCodecInTheManifestIsRefused() throws {
        #expect(throws: ProtocolError.self) { try CodecName(validating: "int3") }
        for codec in CodecName.allCases { #expect(FrameCodec(named: codec.rawValue) != nil, "\(codec) is a frame codec") }
    }
}
