import CleaveAgent
import CleaveCoordinator
import CleaveMQTT
import CleaveNetem
import CleaveProtocol
import CleaveSupport
import Foundation

/// A fleet on one machine: a Mosquitto broker, coordinators and agents, each agent connected
/// directly or through its own netem proxy.
///
/// `cleave demo`, `cleave bench split`, `cleave harness run` and the integration tests all
/// build their fleet here, so that the order of starting (broker, coordinators, agents) and of
/// stopping (agents, proxies, coordinators after their frames in flight, the broker) is written
/// once. The testbed fills in every member's broker address; the rest of each configuration
/// is the caller's.
public actor Testbed {
    /// One agent and the proxy between it and the broker, if it has one.
    public struct Member: Sendable {
        public let agent: Agent
        public let proxy: NetemProxy?
        /// The proxy's name (the link a scenario shapes), else the device id.
        public let name: String
    }

    public nonisolated let brokerHost: String
    public nonisolated let brokerPort: Int
    /// The broker this testbed started (nil when it was given one).
    public private(set) var localBroker: LocalBroker?
    /// What a broker this testbed starts (again, after ``killBroker()``) is configured with.
    private let brokerConfiguration: (extra: String, allowAnonymous: Bool)
    public private(set) var coordinators: [Coordinator] = []
    public private(set) var members: [Member] = []
    private var stopping: Task<Void, Never>?

    /// The agents in the order they were added.
    public var agents: [Agent] { members.map(\.agent) }

    /// Uses the broker at `broker` (host, port), or starts `mosquitto` from PATH on a free
    /// loopback port with a generated configuration when `broker` is nil.
    public init(broker: (host: String, port: Int)? = nil) throws {
        brokerConfiguration = ("", true)
        if let broker {
            brokerHost = broker.host
            brokerPort = broker.port
            localBroker = nil
        } else {
            let started = try LocalBroker()
            brokerHost = "127.0.0.1"
            brokerPort = started.port
            localBroker = started
        }
    }

    /// Starts `mosquitto` with `extraConfiguration` added to its generated file (a fleet's TLS
    /// listener, passwords and ACL: `cleave demo --secure`); anonymous clients only if allowed.
    public init(startingBrokerWith extraConfiguration: String, allowAnonymous: Bool) throws {
        brokerConfiguration = (extraConfiguration, allowAnonymous)
        let started = try LocalBroker(extraConfiguration: extraConfiguration, allowAnonymous: allowAnonymous)
        brokerHost = "127.0.0.1"
        brokerPort = started.port
        localBroker = started
    }

    /// Starts a coordinator on the testbed's broker.
    @discardableResult
    public func addCoordinator(_ configuration: CoordinatorConfiguration, bundle: ModelBundle) async throws -> Coordinator {
        var configuration = configuration
        configuration.brokerHost = brokerHost
        configuration.brokerPort = brokerPort
        let coordinator = try Coordinator(configuration, bundle: bundle)
        try await coordinator.start()
        coordinators.append(coordinator)
        return coordinator
    }

    /// Starts an agent on the testbed's broker: directly, or through a new netem proxy named
    /// `proxy` (loss and jitter seeded with `seed`). It is not yet ready: see ``waitUntilReady(timeout:)``.
    @discardableResult
    public func addAgent(_ configuration: AgentConfiguration, proxy name: String? = nil, seed: UInt64 = 1) async throws -> Agent {
        let proxy = try name.map {
            try NetemProxy(
                name: $0, listen: Endpoint(host: "127.0.0.1", port: 0), upstream: Endpoint(host: brokerHost, port: UInt16(brokerPort)), seed: seed)
        }
        do {
            let agent = try await Self.startAgent(
                configuration, host: proxy?.listen.host ?? brokerHost, port: proxy.map { Int($0.listen.port) } ?? brokerPort)
            members.append(Member(agent: agent, proxy: proxy, name: name ?? configuration.deviceID))
            return agent
        } catch {
            proxy?.stop()
            throw error
        }
    }

    private static func startAgent(_ configuration: AgentConfiguration, host: String, port: Int) async throws -> Agent {
        var configuration = configuration
        configuration.brokerHost = host
        configuration.brokerPort = port
        let agent = try Agent(configuration)
        try await agent.start()
        return agent
    }

    /// Waits until every agent has its assignment and its models.
    public func waitUntilReady(timeout: Duration = .seconds(60)) async throws {
        for member in members { try await member.agent.waitUntilReady(timeout: timeout) }
    }

    /// A planned restart of `agent`: no new requests, the waiting ones answered, then a new
    /// agent from `configuration` on the same link (the same proxy). Returns it once ready.
    public func restart(_ agent: Agent, as configuration: AgentConfiguration) async throws -> Agent {
        guard let index = members.firstIndex(where: { $0.agent === agent }) else { throw TestbedError.notAMember }
        let old = members[index]
        await agent.drain()
        await agent.stop()
        let port = old.proxy.map { Int($0.listen.port) } ?? brokerPort
        let fresh = try await Self.startAgent(configuration, host: old.proxy?.listen.host ?? brokerHost, port: port)
        members[index] = Member(agent: fresh, proxy: old.proxy, name: old.name)
        try await fresh.waitUntilReady()
        return fresh
    }

    /// Stops every agent and its proxy; the broker and the coordinators keep running (the
    /// harness gives every run fresh agents).
    public func removeAgents() async {
        let leaving = members
        members = []
        for member in leaving {
            await member.agent.stop()
            member.proxy?.stop()
        }
    }

    /// Kills the broker this testbed started with SIGKILL, as a crash would.
    public func killBroker() throws {
        guard let broker = localBroker else { throw TestbedError.brokerNotOurs }
        broker.kill9()
        localBroker = nil
    }

    /// Starts the broker again on the same port after ``killBroker()``.
    public func restartBroker() throws {
        guard localBroker == nil else { return }
        localBroker = try LocalBroker(
            port: brokerPort, extraConfiguration: brokerConfiguration.extra, allowAnonymous: brokerConfiguration.allowAnonymous)
    }

    /// Stops everything, agents first; each coordinator finishes the frames it is computing
    /// (at most `drainTimeout`). Safe to call more than once and from several tasks: every
    /// call returns once everything has stopped.
    public func stop(drainTimeout: Duration = .seconds(4)) async {
        if let stopping {
            await stopping.value
            return
        }
        let task = Task { await stopEverything(drainTimeout: drainTimeout) }
        stopping = task
        await task.value
    }

    private func stopEverything(drainTimeout: Duration) async {
        await removeAgents()
        for coordinator in coordinators {
            await coordinator.drain(timeout: drainTimeout)
            await coordinator.stop()
        }
        coordinators = []
        localBroker?.stop()
        localBroker = nil
    }
}

/// What the testbed refuses.
public enum TestbedError: Error, Equatable, CustomStringConvertible {
    /// A SIGINT or SIGTERM stopped the run.
    case interrupted
    /// The agent to restart was not started by this testbed.
    case notAMember
    /// The broker was given, not started here, so the testbed cannot kill or restart it.
    case brokerNotOurs

    public var description: String {
        switch self {
        case .interrupted: "interrupted: everything the testbed started is stopped"
        case .notAMember: "that agent was not started by this testbed"
        case .brokerNotOurs: "the broker was given with --broker; the testbed can only kill or restart a broker it started"
        }
    }
}
