import CleaveDatasets
import CleaveIdentity
import CleaveProtocol
import CleaveSupport
import CleaveTrain
import Foundation
import Synchronization
import Testing

@testable import CleaveFederated

/// The coordinator and its clients over the protocol's in-memory broker (the real Mosquitto
/// runs in `CleaveCLITests/FederatedFleetProcessTests`).
@Suite struct FleetTests {
    static let data = SimulationTests.data

    static func fleet(_ strategy: StrategyChoice, clients: Int = 3, rounds: Int = 2) -> FleetSettings {
        var settings = FleetSettings()
        settings.run = "test"
        settings.strategy = strategy
        settings.clients = clients
        settings.partition = .iid
        settings.rounds = rounds
        settings.local = LocalTraining(epochs: 1, batchSize: 32, learningRate: 0.05)
        settings.seed = 3
        settings.trainLimit = 1200
        return settings
    }

    /// Runs a coordinator and `clients` clients to the end; returns the records and every client event.
    static func runFleet(
        _ settings: FleetSettings, train: FashionMNIST, test: FashionMNIST, broker: InMemoryBroker = InMemoryBroker(),
        configure: (inout FleetClientSettings) -> Void = { _ in }
    ) async throws -> (records: [AggregationRecord], events: [FleetEvent], clientEvents: [ClientEvent]) {
        let events = EventLog<FleetEvent>()
        let clientEvents = EventLog<ClientEvent>()
        var clients: [FleetClientSettings] = []
        for shard in 0..<settings.clients {
            var client = FleetClientSettings(run: settings.run, device: "board-\(shard)", shard: shard)
            configure(&client)
            clients.append(client)
        }
        let records = try await withThrowingTaskGroup(of: [AggregationRecord]?.self) { group in
            group.addTask {
                let server = try FederatedServer(
                    settings: settings, transport: broker.makeTransport(clientID: "coordinator"), test: test, observer: events.append)
                return try await server.run()
            }
            for client in clients {
                group.addTask {
                    let will = FederatedClient.will(run: settings.run, device: client.device, shard: client.shard)
                    try await FederatedClient(
                        settings: client, transport: broker.makeTransport(clientID: client.device, will: will), train: train, threads: 1,
                        observer: clientEvents.append
                    ).run()
                    return nil
                }
            }
            var records: [AggregationRecord] = []
            for try await result in group { if let result { records = result } }
            return records
        }
        return (records, events.items, clientEvents.items)
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"), .timeLimit(.minutes(2)))
    func fedAvgOverTheBrokerEqualsTheSimulation() async throws {
        let (train, test) = try #require(Self.data)
        let fleet = Self.fleet(.fedAvg)
        let (records, events, clientEvents) = try await Self.runFleet(fleet, train: train, test: test)
        #expect(records.count == 2)
        #expect(records.allSatisfy { $0.updates == 3 && $0.dropped == 0 && $0.refused == 0 })
        #expect(clientEvents.filter { if case .epoch = $0 { true } else { false } }.count == 6, "one progress event per local epoch")
        #expect(events.contains { if case .roundStarted(2, [0, 1, 2]) = $0 { true } else { false } })

        // The same run in the simulation: same partition, initial model, seeds and order of summation.
        var simulated = FederatedSettings()
        simulated.strategy = .fedAvg
        simulated.clients = 3
        simulated.partition = .iid
        simulated.rounds = 2
        simulated.local = fleet.local
        simulated.seed = fleet.seed
        let simulation = try FederatedSimulation(settings: simulated, train: train.prefix(1200), test: test, threads: 1)
        let expected = try simulation.run()
        #expect(records.map(\.accuracy) == expected.map(\.accuracy), "the fleet and the simulation trained different models")
        #expect(abs(records[1].loss - expected[1].loss) < 1e-12)
    }

    /// A signed run with clients pinned to the fleet key: a forger with broker access answers
    /// every global model with an unsigned model of zeros for the next round and a replay of the
    /// model before; the clients ignore both, and the run trains exactly what the plain run
    /// trains (without the check the clients train on the zeros and the run stalls).
    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"), .timeLimit(.minutes(2)))
    func pinnedClientsIgnoreForgedAndReplayedModels() async throws {
        let (train, test) = try #require(Self.data)
        let plain = try await Self.runFleet(Self.fleet(.fedAvg), train: train, test: test).records
        let key = FleetSigningKey()
        var signed = Self.fleet(.fedAvg)
        signed.signingKey = key
        let broker = InMemoryBroker()
        let forger = broker.makeTransport(clientID: "forger")
        try forger.connect()
        let topic = Topic.federatedModel(run: signed.run).path
        try forger.subscribe(topic, qos: 1)
        let forgery = Task {
            var previous: [UInt8]?
            for await event in forger.events {
                guard case .message(let message) = event, !message.payload.isEmpty, message.userProperties["forged"] == nil,
                    let envelope = try? key.publicKey.open(message.payload, topic: topic)
                else { continue }
                // The next round, early, with every client asked and the weights zeroed: a client
                // that took it would train on zeros and miss the real round.
                var zeros = try ModelFrame.decode(envelope.payload, layout: SimpleCNN.layout)
                zeros.weights = [Float](repeating: 0, count: zeros.weights.count)
                zeros.round += 1
                zeros.selected = nil
                try? forger.publish(
                    MQTTMessage(topic: topic, payload: zeros.encode(layout: SimpleCNN.layout), qos: 1, userProperties: ["forged": "plain"]))
                if let previous { try? forger.publish(MQTTMessage(topic: topic, payload: previous, qos: 1, userProperties: ["forged": "replay"])) }
                previous = message.payload
            }
        }
        defer { forgery.cancel() }
        let run = try await Self.runFleet(signed, train: train, test: test, broker: broker) { $0.fleetKey = key.publicKey }
        let ignored = run.clientEvents.compactMap { if case .ignored(let reason) = $0 { reason } else { nil } }
        #expect(ignored.contains { $0.contains("unsigned") } && ignored.contains { $0.contains("replayed") }, "\(ignored)")
        #expect(run.records.map(\.accuracy) == plain.map(\.accuracy), "the forged models changed what the fleet trained")
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"), .timeLimit(.minutes(2)))
    func fedBuffAggregatesAsUpdatesArrive() async throws {
        let (train, test) = try #require(Self.data)
        var fleet = Self.fleet(.fedBuff(bufferSize: 2, serverLearningRate: 1), rounds: 4)
        fleet.compression = .topK(fraction: 0.1)
        let (records, _, clientEvents) = try await Self.runFleet(fleet, train: train, test: test)
        #expect(records.count == 4)
        #expect(records.allSatisfy { $0.updates == 2 && $0.refused == 0 }, "\(records)")
        #expect(records.last?.accuracy.map { $0 > 0.3 } == true, "\(records.last?.accuracy ?? -1)")
        let sent = clientEvents.compactMap { if case .sent(_, let bytes, _) = $0 { bytes } else { nil } }
        #expect(sent.allSatisfy { $0 < SimpleCNN.layout.count * 4 / 4 }, "top-k 10% frames should be far below float32: \(sent)")
    }

    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"), .timeLimit(.minutes(2)))
    func poisonedClientsAreOutvotedByTheMedian() async throws {
        let (train, test) = try #require(Self.data)
        // 1 of 3 sends its update sign-flipped ×10: FedAvg's model is wrecked, the median's is not.
        let poison: (inout FleetClientSettings) -> Void = { client in
            if client.shard == 2 { client.attack = .signFlip(scale: 10) }
        }
        let averaged = try await Self.runFleet(Self.fleet(.fedAvg), train: train, test: test, configure: poison).records
        let median = try await Self.runFleet(Self.fleet(.fedMedian), train: train, test: test, configure: poison).records
        let (bad, good) = (try #require(averaged.last?.accuracy), try #require(median.last?.accuracy))
        #expect(good > 0.4 && bad < good - 0.2, "median \(good), FedAvg \(bad)")
    }
    @Test(.enabled(if: data != nil, "install dataset-fashion-mnist"), .timeLimit(.minutes(2)))
    func badUpdatesAreRefusedWithTheirReasonAndLeaveTheAggregateAlone() async throws {
        let (train, test) = try #require(Self.data)
        let fleet = {
            var fleet = Self.fleet(.fedAvg, clients: 3, rounds: 1)
            fleet.run = "bad"
            return fleet
        }()
        let broker = InMemoryBroker()
        let events = EventLog<FleetEvent>()
        let layout = SimpleCNN.layout
        // Shards 0 and 1 are honest clients; shard 2 is announced by a rogue that sends bad frames first.
        let records = try await withThrowingTaskGroup(of: [AggregationRecord]?.self) { group in
            group.addTask {
                try await FederatedServer(
                    settings: fleet, transport: broker.makeTransport(clientID: "coordinator"), test: test, observer: events.append
                )
                .run()
            }
            for shard in 0..<2 {
                group.addTask {
                    try await FederatedClient(
                        settings: FleetClientSettings(run: "bad", device: "board-\(shard)", shard: shard),
                        transport: broker.makeTransport(clientID: "board-\(shard)"), train: train, threads: 1
                    ).run()
                    return nil
                }
            }
            group.addTask {
                let rogue = broker.makeTransport(clientID: "rogue")
                let (opened, signal) = AsyncStream<Void>.makeStream()
                let pump = try await rogue.connect { event in
                    if case .message(let message) = event, message.topic.hasSuffix("/model"), !message.payload.isEmpty { signal.yield() }
                }
                defer { pump.cancel() }
                try rogue.subscribe(Topic.federatedModel(run: "bad").path, qos: 1)
                let announcement = ClientAnnouncement(device: "rogue", shard: 2, examples: 400, online: true, board: "?")
                try rogue.publish(
                    MQTTMessage(
                        topic: Topic.federatedClient(run: "bad", device: "rogue").path, payload: [UInt8](try JSONEncoder().encode(announcement))))
                for await _ in opened { break }
                let zeros = [Float](repeating: 0, count: layout.count)
                var nan = zeros
                nan[17] = .nan
                let frames = [
                    ("rogue", ClientUpdate(client: 0, examples: 400, delta: zeros, baseVersion: 0)),  // another shard
                    ("rogue", ClientUpdate(client: 2, examples: 400, delta: nan, baseVersion: 0)),  // NaN
                    ("rogue", ClientUpdate(client: 2, examples: 400, delta: zeros, baseVersion: 7)),  // another round
                    ("rogue", ClientUpdate(client: 2, examples: 9_000, delta: zeros, baseVersion: 0)),  // more examples than announced
                    ("stranger", ClientUpdate(client: 2, examples: 400, delta: zeros, baseVersion: 0)),  // never announced
                ]
                for (device, update) in frames {
                    let frame = UpdateCodec.encode(update, layout: layout, compression: .float32)
                    try rogue.publish(MQTTMessage(topic: Topic.federatedUpdate(run: "bad", device: device).path, payload: frame, qos: 1))
                }
                try rogue.publish(
                    MQTTMessage(topic: Topic.federatedUpdate(run: "bad", device: "rogue").path, payload: Array(repeating: 0xFD, count: 40), qos: 1))
                // Finally an honest (empty) update, so that the round can close.
                let honest = ClientUpdate(client: 2, examples: 400, delta: zeros, baseVersion: 0)
                try rogue.publish(
                    MQTTMessage(
                        topic: Topic.federatedUpdate(run: "bad", device: "rogue").path,
                        payload: UpdateCodec.encode(honest, layout: layout, compression: .float32), qos: 1))
                return nil
            }
            var records: [AggregationRecord] = []
            for try await result in group { if let result { records = result } }
            return records
        }
        let reasons = events.items.compactMap { if case .refused(_, let reason) = $0 { reason } else { nil } }
        #expect(records.first?.updates == 3)
        #expect(records.first?.refused == 6, "\(reasons)")
        for expected in ["holds shard 2", "non-finite", "round 8", "examples", "has not announced", "checksum"] {
            #expect(reasons.contains { $0.contains(expected) }, "no refusal mentions '\(expected)': \(reasons)")
        }
    }

    @Test func federatedTopicsParseBackAndRefuseWildcards() {
        for topic in [
            Topic.federatedTask(run: "r1"), .federatedModel(run: "r1"), .federatedClient(run: "r1", device: "pi-3"),
            .federatedUpdate(run: "r1", device: "pi-3"),
        ] {
            #expect(Topic(parsing: topic.path) == topic, "\(topic.path)")
        }
        #expect(Topic(parsing: "cleave/v1/fl/r1/updates/+") == nil)
        #expect(Topic(parsing: "cleave/v1/fl/r1/updates/a/b") == nil)
        #expect(Topic(parsing: "cleave/v1/fl/r1/other") == nil)
        #expect(Topic.allFederatedUpdates(run: "r1") == "cleave/v1/fl/r1/updates/+")
        #expect(throws: FederatedError.self) { try FleetSettings.named("a/b").validate() }
    }

    @Test func modelFramesRoundTripAndRefuseDamage() throws {
        let layout = SimpleCNN.layout
        var generator = SeededGenerator(seed: 9)
        let weights = (0..<layout.count).map { _ in Float(generator.normal()) }
        let frame = ModelFrame(version: 4, round: 5, selected: [0, 3, 7], boot: 0xABCD, weights: weights)
        let bytes = frame.encode(layout: layout)
        #expect(try ModelFrame.decode(bytes, layout: layout) == frame)
        let everyone = ModelFrame(version: 9, round: 10, selected: nil, boot: 1, weights: weights)
        #expect(try ModelFrame.decode(everyone.encode(layout: layout), layout: layout).selects(123))
        // On a small model: every truncation and 20,000 random byte changes are refused, never trapped on.
        let small = WeightLayout([(name: "w", shape: [4, 5]), (name: "b", shape: [4])])
        let smallBytes = ModelFrame(version: 2, round: 3, selected: [1, 2], boot: 7, weights: Array(weights.prefix(24))).encode(layout: small)
        for length in 0..<smallBytes.count {
            #expect(throws: FederatedError.self) { try ModelFrame.decode(Array(smallBytes.prefix(length)), layout: small) }
        }
        for _ in 0..<20_000 {
            var damaged = smallBytes
            let position = Int(generator.uniform() * Double(smallBytes.count))
            damaged[position] ^= UInt8(1 + Int(generator.uniform() * 255))
            #expect(throws: FederatedError.self) { try ModelFrame.decode(damaged, layout: small) }
        }
        let other = WeightLayout([(name: "w", shape: [layout.count])])
        #expect(throws: FederatedError("the model frame is of another model (its layout digest differs from this client's)")) {
            try ModelFrame.decode(bytes, layout: other)
        }
        var nan = weights
        nan[3] = .infinity
        #expect(throws: FederatedError("the model frame holds a non-finite weight")) {
            try ModelFrame.decode(ModelFrame(version: 0, round: 1, selected: nil, boot: 1, weights: nan).encode(layout: layout), layout: layout)
        }
    }
}

extension FleetSettings {
    static func named(_ run: String) -> FleetSettings {
        var settings = FleetSettings()
        settings.run = run
        return settings
    }
}

/// Events collected from the threads that report them.
final class EventLog<Event: Sendable>: Sendable {
    private let storage = Mutex<[Event]>([])

    var items: [Event] { storage.withLock { $0 } }

    @Sendable func append(_ event: Event) { storage.withLock { $0.append(event) } }
}
