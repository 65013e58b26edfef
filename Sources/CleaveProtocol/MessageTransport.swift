/// What agents and coordinators need of a message broker: MQTT v5's publish with
/// properties, subscriptions with wildcards and shared groups, retained messages, a will,
/// request/response through a response topic and correlation data, and connection events.
///
/// `CleaveMQTT`'s `MQTTClient` implements it over libmosquitto against a real Mosquitto;
/// ``InMemoryBroker`` implements it inside one process, so that agent and coordinator
/// logic has fast unit tests. The will is part of how a transport is made (it is sent at
/// connect time), so it is not in this protocol.
public protocol MessageTransport: AnyObject, Sendable {
    /// Connection changes and received messages, in order.
    var events: AsyncStream<MQTTEvent> { get }
    /// Starts connecting (and reconnecting after every drop); progress arrives as events.
    func connect() throws
    /// Disconnects cleanly (the will is not published).
    func disconnect()
    /// Publishes `message`; throws when it cannot be handed to the broker now.
    func publish(_ message: MQTTMessage) throws
    /// Subscribes to `pattern` (`+`, `#` and `$share/GROUP/…` allowed).
    func subscribe(_ pattern: String, qos: Int) throws
    /// Ends the subscription to `pattern`, exactly as subscribed.
    func unsubscribe(_ pattern: String) throws
}

extension MessageTransport {
    /// Hands every event to `handle`, one at a time and in order, on a task of its own (it
    /// ends with the event stream or when cancelled), connects, and returns that task once the
    /// first `.connected` event has been handled (so that its subscriptions are in place).
    public func connect(deliveringEventsTo handle: @escaping @Sendable (MQTTEvent) async -> Void) async throws -> Task<Void, Never> {
        let events = self.events
        let (handled, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let task = Task {
            for await event in events {
                await handle(event)
                if case .connected = event { signal.yield() }
            }
            signal.finish()
        }
        do {
            try connect()
        } catch {
            task.cancel()
            throw error
        }
        for await _ in handled { break }
        return task
    }
}

/// An application message received from or sent to the broker (MQTT v5 semantics).
public struct MQTTMessage: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int
    public var retain: Bool
    /// MQTT v5 response topic, where the receiver should answer.
    public var responseTopic: String?
    /// MQTT v5 correlation data, echoed in the answer.
    public var correlationData: [UInt8]?
    /// MQTT v5 user properties.
    public var userProperties: [String: String]

    /// A message.
    public init(
        topic: String, payload: [UInt8], qos: Int = 0, retain: Bool = false, responseTopic: String? = nil,
        correlationData: [UInt8]? = nil, userProperties: [String: String] = [:]
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.userProperties = userProperties
    }
}

/// What the client reports through ``MQTTClient/events``.
public enum MQTTEvent: Sendable {
    /// The broker accepted the connection (also after each automatic reconnect).
    case connected
    /// The broker refused the connection; the code is the MQTT v5 reason code.
    case refused(reasonCode: Int)
    /// The connection dropped (code 0: we asked for it); libmosquitto reconnects by itself.
    case disconnected(code: Int)
    case message(MQTTMessage)
}
