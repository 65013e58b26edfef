import Synchronization

/// A broker inside one process: the MQTT semantics Cleave relies on — topic wildcards,
/// shared subscriptions (round robin within a group), retained messages, wills, v5
/// properties — with no sockets, so that agent and coordinator logic is tested in
/// milliseconds. ``setAvailable(_:)`` makes it vanish and come back, as a restarted
/// Mosquitto does (sessions survive, as with persistence; messages published while it is
/// away are lost). Integration tests keep using a real Mosquitto.
public final class InMemoryBroker: Sendable {
    struct Subscription {
        var client: ObjectIdentifier
        var filter: String
        var group: String?
    }

    struct State {
        var available = true
        var clients: [ObjectIdentifier: InMemoryTransport] = [:]
        var subscriptions: [Subscription] = []
        var retained: [String: MQTTMessage] = [:]
        var nextInGroup: [String: Int] = [:]
        var published = 0
    }

    let state = Mutex(State())

    public init() {}

    /// A client of this broker; `will` is published (retained as given) if it is dropped with
    /// ``InMemoryTransport/vanish()``.
    public func makeTransport(clientID: String, will: MQTTMessage? = nil) -> InMemoryTransport {
        InMemoryTransport(broker: self, clientID: clientID, will: will)
    }

    /// Messages published so far (for tests that count traffic).
    public var publishedCount: Int { state.withLock { $0.published } }

    /// The topic filters the client `clientID` is subscribed to (for tests that wait for a subscription).
    public func subscriptions(of clientID: String) -> [String] {
        state.withLock { state in
            state.subscriptions.filter { state.clients[$0.client]?.clientID == clientID }.map(\.filter)
        }
    }

    /// The retained message on `topic`, if any.
    public func retained(_ topic: String) -> MQTTMessage? { state.withLock { $0.retained[topic] } }

    /// Takes the broker away (every connected client sees a disconnect and its publishes fail)
    /// or brings it back (every client that wants to be connected is connected again).
    public func setAvailable(_ available: Bool) {
        let clients = state.withLock { state -> [InMemoryTransport] in
            state.available = available
            return Array(state.clients.values)
        }
        for client in clients { available ? client.brokerReturned() : client.brokerVanished() }
    }

    // MARK: - Routing (called by the transports)

    func attach(_ client: InMemoryTransport) -> Bool {
        state.withLock { state in
            state.clients[ObjectIdentifier(client)] = client
            return state.available
        }
    }

    func detach(_ client: InMemoryTransport, publishingWill will: MQTTMessage?) {
        state.withLock { state in
            state.clients[ObjectIdentifier(client)] = nil
            state.subscriptions.removeAll { $0.client == ObjectIdentifier(client) }
        }
        if let will { try? route(will) }
    }

    func subscribe(_ client: InMemoryTransport, pattern: String) throws {
        let retained = try state.withLock { state throws(InMemoryBrokerError) -> [MQTTMessage] in
            guard state.available else { throw InMemoryBrokerError.unavailable }
            let (group, filter) = Self.parse(pattern)
            state.subscriptions.removeAll { $0.client == ObjectIdentifier(client) && $0.filter == filter && $0.group == group }
            state.subscriptions.append(Subscription(client: ObjectIdentifier(client), filter: filter, group: group))
            // Retained messages go to new subscribers (shared subscriptions get none, as in MQTT v5).
            guard group == nil else { return [] }
            return state.retained.keys.sorted().filter { Self.matches(filter, $0) }.compactMap { state.retained[$0] }
        }
        for message in retained { client.deliver(message) }
    }

    func unsubscribe(_ client: InMemoryTransport, pattern: String) {
        let (group, filter) = Self.parse(pattern)
        state.withLock { state in
            state.subscriptions.removeAll { $0.client == ObjectIdentifier(client) && $0.filter == filter && $0.group == group }
        }
    }

    func route(_ message: MQTTMessage) throws {
        let receivers = try state.withLock { state throws(InMemoryBrokerError) -> [InMemoryTransport] in
            guard state.available else { throw InMemoryBrokerError.unavailable }
            state.published += 1
            if message.retain {
                state.retained[message.topic] = message.payload.isEmpty ? nil : message
            }
            var receivers: [ObjectIdentifier] = []
            var groups: [String: [ObjectIdentifier]] = [:]
            for subscription in state.subscriptions where Self.matches(subscription.filter, message.topic) {
                if let group = subscription.group {
                    groups["\(group)|\(subscription.filter)", default: []].append(subscription.client)
                } else if !receivers.contains(subscription.client) {
                    receivers.append(subscription.client)
                }
            }
            for key in groups.keys.sorted() {
                let members = groups[key]!
                let next = state.nextInGroup[key, default: 0]
                state.nextInGroup[key] = next + 1
                let chosen = members[next % members.count]
                if !receivers.contains(chosen) { receivers.append(chosen) }
            }
            return receivers.compactMap { state.clients[$0] }
        }
        var delivered = message
        delivered.retain = false
        for receiver in receivers { receiver.deliver(delivered) }
    }

    // MARK: - Topic filters

    /// `$share/GROUP/FILTER` → (GROUP, FILTER); anything else → (nil, pattern).
    static func parse(_ pattern: String) -> (group: String?, filter: String) {
        let parts = pattern.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "$share" else { return (nil, pattern) }
        return (String(parts[1]), String(parts[2]))
    }

    /// Whether `topic` matches `filter` (`+` one level, `#` the rest).
    static func matches(_ filter: String, _ topic: String) -> Bool {
        let filterLevels = filter.split(separator: "/", omittingEmptySubsequences: false)
        let topicLevels = topic.split(separator: "/", omittingEmptySubsequences: false)
        for (index, level) in filterLevels.enumerated() {
            if level == "#" { return true }
            guard index < topicLevels.count else { return false }
            if level != "+" && level != topicLevels[index] { return false }
        }
        return filterLevels.count == topicLevels.count
    }
}

/// Why an ``InMemoryBroker`` refused a call.
public enum InMemoryBrokerError: Error, Sendable, CustomStringConvertible {
    /// The broker is away (``InMemoryBroker/setAvailable(_:)``) or the client is not connected.
    case unavailable

    public var description: String { "the in-memory broker is not reachable" }
}

/// One client of an ``InMemoryBroker``; its subscriptions survive the broker's absence, as
/// an MQTT v5 persistent session does.
public final class InMemoryTransport: MessageTransport {
    public let events: AsyncStream<MQTTEvent>
    public let clientID: String
    private let continuation: AsyncStream<MQTTEvent>.Continuation
    private let broker: InMemoryBroker
    private let will: MQTTMessage?
    /// (wants a connection, is connected).
    private let link = Mutex((wanted: false, connected: false))

    init(broker: InMemoryBroker, clientID: String, will: MQTTMessage?) {
        self.broker = broker
        self.clientID = clientID
        self.will = will
        (events, continuation) = AsyncStream<MQTTEvent>.makeStream(bufferingPolicy: .unbounded)
    }

    public func connect() throws {
        link.withLock { $0.wanted = true }
        if broker.attach(self) { brokerReturned() }
    }

    public func disconnect() {
        let was = link.withLock { link -> Bool in
            defer { link = (false, false) }
            return link.connected
        }
        broker.detach(self, publishingWill: nil)
        if was { continuation.yield(.disconnected(code: 0)) }
    }

    /// Drops the connection as a crashed process would: the broker publishes the will.
    public func vanish() {
        link.withLock { $0 = (false, false) }
        broker.detach(self, publishingWill: will)
        continuation.finish()
    }

    public func publish(_ message: MQTTMessage) throws {
        guard link.withLock({ $0.connected }) else { throw InMemoryBrokerError.unavailable }
        try broker.route(message)
    }

    public func subscribe(_ pattern: String, qos: Int) throws {
        guard link.withLock({ $0.connected }) else { throw InMemoryBrokerError.unavailable }
        try broker.subscribe(self, pattern: pattern)
    }

    public func unsubscribe(_ pattern: String) throws {
        broker.unsubscribe(self, pattern: pattern)
    }

    // MARK: - From the broker

    func deliver(_ message: MQTTMessage) {
        guard link.withLock({ $0.connected }) else { return }
        continuation.yield(.message(message))
    }

    func brokerVanished() {
        let was = link.withLock { link -> Bool in
            defer { link.connected = false }
            return link.connected
        }
        if was { continuation.yield(.disconnected(code: 7)) }
    }

    func brokerReturned() {
        let now = link.withLock { link -> Bool in
            guard link.wanted, !link.connected else { return false }
            link.connected = true
            return true
        }
        if now { continuation.yield(.connected) }
    }
}
