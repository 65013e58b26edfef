import CleaveAgent
import CleaveCodec
import CleaveDatasets
import CleaveMQTT
import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import CleaveTestbed
import Foundation
import Testing

@testable import CleaveAgent
@testable import CleaveCoordinator

/// Agent and coordinator in-process against a real Mosquitto, with the committed demo model.
@Suite struct SplitServingTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path
    static let modelFolder = "\(repository)/models/fmnist/c4"

    /// A generic-profile agent with a 5 s request timeout (the testbed fills in the broker).
    func agentConfiguration(_ id: String) throws -> AgentConfiguration {
        let profile = try DeviceProfile.load("\(Self.repository)/devices/generic.yaml")
        return AgentConfiguration(deviceID: id, profile: profile, threads: 1, requestTimeout: .seconds(5))
    }

    @Test func everyModeMatchesTheWholeModel() async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        try await testbed.addCoordinator(CoordinatorConfiguration(id: "c1"), bundle: bundle)
        let agent = try await testbed.addAgent(try agentConfiguration("device-a"))
        try await testbed.waitUntilReady()

        let test = try FashionMNIST(split: .test)
        let whole = InferenceSession(model: try Model(serialized: Data(bundle.full)), threads: 1)
        let head = InferenceSession(model: try Model(serialized: Data(bundle.head)), threads: 1)
        let tail = InferenceSession(model: try Model(serialized: Data(bundle.tail)), threads: 1)
        let manifest = bundle.manifest
        let codec = try #require(FrameCodec(named: manifest.codec))
        func argmax(_ tensor: Tensor?) -> Int {
            Classification.argmax(tensor!.scalars(as: Float.self))!
        }
        let count = 300
        var correct: [InferenceMode: Int] = [:]
        var reference = 0
        var splitReference = 0
        for index in 0..<count {
            let image = test.image(index)
            let expected = argmax(try whole.run(["image": image])["logits"])
            // The split path offline: head, the manifest's codec there and back, tail.
            let features = try #require(try head.run(["image": image])[manifest.cutTensor])
            let frame = BottleneckCodec.encode(features, requestID: UInt64(index), options: FrameOptions(codec: codec, zstdLevel: manifest.zstdLevel))
            let decoded = try BottleneckCodec.decode(frame, expectedShape: features.shape).tensor
            let expectedSplit = argmax(try tail.run([manifest.cutTensor: decoded]).values.first)
            if expected == Int(test.labels[index]) { reference += 1 }
            if expectedSplit == Int(test.labels[index]) { splitReference += 1 }
            for mode in InferenceMode.allCases {
                let outcome = await agent.infer(image, mode: mode)
                #expect(outcome.error == nil, "\(mode) #\(index): \(outcome.error ?? "")")
                if outcome.prediction == Int(test.labels[index]) { correct[mode, default: 0] += 1 }
                #expect(outcome.prediction == (mode == .split ? expectedSplit : expected), "\(mode) #\(index)")
            }
        }
        // Over MQTT, every mode gives exactly the predictions of the same computation done in-process.
        #expect(correct[.split] == splitReference)
        #expect(correct[.local] == reference)
        #expect(correct[.offload] == reference)
        await testbed.stop()
    }

    /// A Pi Zero 2 W agent that sends each split request in parts, one frame per patch or per
    /// row of patches: the coordinator assembles them and answers exactly what the same parts
    /// give offline.
    @Test(arguments: PatchStreaming.allCases)
    func partsSentPatchByPatchAreAssembledBeforeTheTail(streaming: PatchStreaming) async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let coordinator = try await testbed.addCoordinator(CoordinatorConfiguration(id: "c1"), bundle: bundle)
        let profile = try DeviceProfile.load("\(Self.repository)/devices/raspberry-pi-zero-2w.yaml")
        // 30 s: under a loaded CI the coordinator's first frame builds the tail's plan, which can
        // take longer than 5 s in a debug build.
        let agent = try await testbed.addAgent(
            AgentConfiguration(
                deviceID: "device-parts-\(streaming)", profile: profile, threads: 1, requestTimeout: .seconds(30), fallbackToLocal: false,
                streamPatches: streaming))
        try await testbed.waitUntilReady()
        let plan = try #require(await agent.streamingPlan, "the Pi Zero's budget allows a plan that ends at the cut")
        #expect(plan.stageEnd == bundle.manifest.cutTensor && plan.patchCount >= 4)

        let manifest = bundle.manifest
        let head = InferenceSession(model: try Model(serialized: Data(bundle.head)), threads: 1)
        let tail = InferenceSession(model: try Model(serialized: Data(bundle.tail)), threads: 1)
        let options = FrameOptions(codec: try #require(FrameCodec(named: manifest.codec)), zstdLevel: manifest.zstdLevel)
        let shape = [1] + manifest.cutShape
        let (height, width) = (shape[2], shape[3])
        let workspace = PatchWorkspace()
        let test = try FashionMNIST(split: .test)
        let count = 40
        for index in 0..<count {
            let image = test.image(index)
            let outcome = await agent.infer(image, mode: .split)
            // The same parts offline, from the same plan's patches: each encoded with its region, assembled.
            var regions: [(Range<Int>, Range<Int>)] = []
            var patchParts: [Tensor] = []
            let features = try #require(
                try plan.run(["image": image], pool: head.pool, workspace: workspace) { part, rows, columns in
                    regions.append((rows, columns))
                    patchParts.append(part.copy())
                }[manifest.cutTensor])
            var parts: [(Tensor, Range<Int>, Range<Int>)] = zip(patchParts, regions).map { ($0, $1.0, $1.1) }
            if streaming == .row {
                parts = (0..<plan.grid.rows).map { row in
                    let rows = (row * height / plan.grid.rows)..<((row + 1) * height / plan.grid.rows)
                    let band = Tensor(zeros: [1, shape[1], rows.count, width])
                    Layout.copyWindow(of: features, from: (rows.lowerBound, 0), into: band, at: (0, 0), size: (rows.count, width))
                    return (band, rows, 0..<width)
                }
            }
            var assembly = PartAssembly(shape: shape, parts: parts.count)
            var bytes = 0
            for (part, rows, columns) in parts {
                var partOptions = options
                partOptions.region = FrameRegion(
                    top: rows.lowerBound, left: columns.lowerBound, height: rows.count, width: columns.count, parts: parts.count)
                let frame = BottleneckCodec.encode(part, requestID: outcome.requestID, options: partOptions)
                bytes += frame.count
                try assembly.add(BottleneckCodec.decode(frame, expectedShape: shape))
            }
            #expect(assembly.isComplete)
            let expected = Classification.argmax(try tail.run([manifest.cutTensor: assembly.tensor]).values.first!.scalars(as: Float.self))
            #expect(outcome.error == nil, "#\(index): \(outcome.error ?? "")")
            #expect(outcome.prediction == expected, "#\(index)")
            #expect(outcome.bytesSent == bytes, "#\(index): the agent sends every part once")
        }
        let statistics = await coordinator.statistics
        #expect(statistics.assembled == count)
        #expect(statistics.answered == count && statistics.rejected == 0)
        await testbed.stop()
    }

    @Test func twoCoordinatorsShareTheLoadAndAnswerOnce() async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let first = try await testbed.addCoordinator(CoordinatorConfiguration(id: "c1"), bundle: bundle)
        let second = try await testbed.addCoordinator(CoordinatorConfiguration(id: "c2"), bundle: bundle)
        let agent = try await testbed.addAgent(try agentConfiguration("device-b"))
        try await testbed.waitUntilReady()
        let test = try FashionMNIST(split: .test)
        let requests = 200
        var answered = 0
        for index in 0..<requests where await agent.infer(test.image(index), mode: .split).prediction != nil { answered += 1 }
        let a = await first.statistics
        let b = await second.statistics
        #expect(answered == requests)
        #expect(a.answered > 0 && b.answered > 0, "both coordinators must receive work: \(a.answered) and \(b.answered)")
        // A request is computed once, unless the agent published it again because its answer was
        // late (a loaded machine) and the repeat went to the other coordinator, whose cache does
        // not hold it; the agent still delivers one answer per request.
        let retries = await agent.statistics.retries
        #expect(
            a.answered + b.answered >= requests && a.answered + b.answered <= requests + retries, "\(a.answered) + \(b.answered), \(retries) retries")
        await testbed.stop()
    }

    @Test func badFramesGetTypedRejectionsAndServiceContinues() async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: Self.modelFolder)
        let coordinator = try await testbed.addCoordinator(CoordinatorConfiguration(id: "c1"), bundle: bundle)
        let agent = try await testbed.addAgent(try agentConfiguration("device-c"))
        try await testbed.waitUntilReady()

        let client = try MQTTClient(MQTTConfiguration(port: testbed.brokerPort, clientID: "prober"))
        try client.connect()
        for await event in client.events { if case .connected = event { break } }
        try client.subscribe(Topic.results(device: "prober").path, qos: 1)
        try await Task.sleep(for: .milliseconds(100))
        let features = Tensor(zeros: [1] + bundle.manifest.cutShape)
        var wrongCRC = BottleneckCodec.encode(features, requestID: 2)
        wrongCRC[wrongCRC.count - 1] ^= 0xFF
        let unknownModel = BottleneckCodec.encode(
            features, requestID: 4, options: FrameOptions(context: FrameContext(modelDigest: [0, 1, 2, 3, 4, 5, 6, 7], splitID: 0)))
        let oversized = [UInt8](repeating: 0xC7, count: 2 << 20)
        let probes: [(UInt64, [UInt8], Rejection.Reason, String)] = [
            (1, [0xC7, 0x12, 0x00, 0x01, 0x02], .malformedFrame, "truncated"), (2, wrongCRC, .malformedFrame, "CRC-32C mismatch"),
            (3, oversized, .frameTooLarge, "limit"), (4, unknownModel, .wrongModel, "is for model"),
        ]
        for (id, payload, _, _) in probes {
            try client.publish(
                MQTTMessage(
                    topic: Topic.infer(device: "prober").path, payload: payload, qos: 1, responseTopic: Topic.results(device: "prober").path,
                    correlationData: RequestID.encode(id)))
        }
        var replies: [UInt64: Rejection] = [:]
        let deadline = ContinuousClock.now + .seconds(10)
        for await event in client.events {
            if case .message(let message) = event, let result = try? JSONDecoder().decode(InferenceResult.self, from: Data(message.payload)) {
                replies[result.requestID] = result.rejection ?? Rejection(.computationFailed, "answered with a prediction")
            }
            if replies.count == probes.count || ContinuousClock.now > deadline { break }
        }
        for (id, _, reason, fragment) in probes {
            let reply = replies[id]
            #expect(reply?.reason == reason && reply?.message.contains(fragment) == true, "request \(id): \(reply?.description ?? "no reply")")
        }
        #expect(await coordinator.statistics.rejected == probes.count)
        let after = await agent.infer(Tensor(zeros: [1, 1, 28, 28]), mode: .split)
        #expect(after.error == nil, "the coordinator must keep serving: \(after.error ?? "")")
        await testbed.stop()
    }
}

@Suite struct BrokerFailureTests {
    @Test func aVanishedBrokerGivesErrorsAndServiceResumesWhenItReturns() async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: SplitServingTests.modelFolder)
        try await testbed.addCoordinator(CoordinatorConfiguration(id: "c1"), bundle: bundle)
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        let agent = try await testbed.addAgent(
            AgentConfiguration(deviceID: "device-d", profile: profile, threads: 1, requestTimeout: .seconds(5), fallbackToLocal: false))
        try await testbed.waitUntilReady()
        let image = Tensor(zeros: [1, 1, 28, 28])
        // Served before the fault. The coordinator's first frame builds the tail's plan, which
        // in a debug build on a CI machine running every suite at once can take longer than
        // the request timeout: a few tries.
        var before = await agent.infer(image, mode: .split)
        for _ in 0..<5 where before.error != nil { before = await agent.infer(image, mode: .split) }
        #expect(before.error == nil, "\(before.error ?? "")")

        try await testbed.killBroker()
        let during = await agent.infer(image, mode: .split)
        #expect(during.prediction == nil && during.error != nil, "no broker: an explicit error, not a hang or a crash")
        #expect(await agent.infer(image, mode: .local).prediction != nil, "local mode keeps working without a broker")

        try await testbed.restartBroker()
        var recovered = false
        for _ in 0..<40 where !recovered {
            try await Task.sleep(for: .milliseconds(500))
            recovered = await agent.infer(image, mode: .split).error == nil
        }
        #expect(recovered, "agent and coordinator reconnect and serve again")
        await testbed.stop()
    }

    /// Artifacts go to the cache folder under their hash; a restarted agent serves from it, and a
    /// corrupted cache file is refused with an error naming it, removed, and fetched again.
    @Test func modelCacheSurvivesRestartAndRefusesCorruption() async throws {
        let testbed = try Testbed()
        let bundle = try ModelBundle(directory: SplitServingTests.modelFolder)
        try await testbed.addCoordinator(CoordinatorConfiguration(id: "c-cache"), bundle: bundle)
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-cache-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let profile = try DeviceProfile.load("\(SplitServingTests.repository)/devices/generic.yaml")
        func agent(_ id: String) async throws -> Agent {
            let agent = try await testbed.addAgent(AgentConfiguration(deviceID: id, profile: profile, threads: 1, modelCache: cache))
            try await agent.waitUntilReady()
            return agent
        }
        let image = try FashionMNIST(split: .test).image(0)

        let first = try await agent("cache-a")
        let full = "\(cache)/\(bundle.manifest.full.sha256).onnx"
        #expect(try Data(contentsOf: URL(fileURLWithPath: full)) == Data(bundle.full))
        #expect(FileManager.default.fileExists(atPath: "\(cache)/\(bundle.manifest.head.sha256).onnx"))
        let expected = await first.infer(image, mode: .local).prediction
        #expect(expected != nil)
        await first.stop()

        // Corrupt the cached whole model: the restarted agent finds it while loading (both
        // artifacts are verified before it is ready), removes it and fetches it again.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: full)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: full))
        let second = try await agent("cache-b")
        #expect(try Data(contentsOf: URL(fileURLWithPath: full)) == Data(bundle.full), "the corrupt file was replaced")
        let recovered = await second.infer(image, mode: .local)
        #expect(recovered.prediction == expected, "\(recovered.error ?? "")")
        // A file corrupted while the agent runs is refused on use, naming the problem.
        try Data(bytes).write(to: URL(fileURLWithPath: full))
        let third = try await agent("cache-c")
        try Data(bytes).write(to: URL(fileURLWithPath: full))
        let refused = await third.infer(image, mode: .local)
        #expect(refused.prediction == nil)
        #expect(refused.error?.contains("is corrupt") == true, "\(refused.error ?? "no error")")
        var again: AgentOutcome?
        for _ in 0..<100 where again?.prediction == nil {
            try await Task.sleep(for: .milliseconds(50))
            again = await third.infer(image, mode: .local)
        }
        #expect(again?.prediction == expected)
        await testbed.stop()
    }

    /// A folder that cannot be written (a full or read-only disk) keeps the artifact in memory, with a warning.
    @Test func unwritableCacheKeepsArtifactsInMemory() throws {
        var store = ArtifactStore(directory: "/proc/cleave-cannot-write-here")
        let bytes: [UInt8] = Array("model bytes".utf8)
        let sha = SHA256.hex(bytes)
        let warning = store.put(sha, bytes)
        #expect(warning?.contains("keeping it in memory") == true)
        #expect(store.contains(sha))
        #expect(try store.bytes(sha) == bytes)
        // A name that is not a SHA-256 never becomes a path.
        #expect(!ArtifactStore(directory: "/tmp").contains("../etc/passwd"))
    }
}
