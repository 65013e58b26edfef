import CleaveDatasets
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
        _ settings: FleetSettings, train: FashionMNIST, test: FashionMNIST, configure: (inout FleetClientSettings) -> Void = { _ in }
    ) async throws -> (records: [AggregationRecord], events: [FleetEvent], clientEvents: [ClientEvent]) {
        let broker = InMemoryBroker()
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
}

/// Events collected from the threads that report them.
final class EventLog<Event: Sendable>: Sendable {
    private let storage = Mutex<[Event]>([])

    var items: [Event] { storage.withLock { $0 } }

    @Sendable func append(_ event: Event) { storage.withLock { $0.append(event) } }
}
