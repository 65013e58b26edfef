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
    ///
    /// A refusal that waiting cannot cure — bad credentials, not authorized, an invalid
    /// client id, banned, an unsupported protocol — disconnects and throws a
    /// ``ConnectionRefused`` naming the reason, instead of retrying for ever; a busy or
    /// unavailable broker is waited for.
    public func connect(deliveringEventsTo handle: @escaping @Sendable (MQTTEvent) async -> Void) async throws -> Task<Void, Never> {
        let events = self.events
        let (outcomes, signal) = AsyncStream<Int?>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let task = Task {
            for await event in events {
                await handle(event)
                switch event {
                case .connected: signal.yield(nil)
                case .refused(let code) where ConnectionRefused.isPermanent(code): signal.yield(code)
                default: break
                }
            }
            signal.finish()
        }
        do {
            try connect()
        } catch {
            task.cancel()
            throw error
        }
        for await refusal in outcomes {
            guard let code = refusal else { break }
            disconnect()
            task.cancel()
            throw ConnectionRefused(reasonCode: code)
        }
        return task
    }
}

/// The broker refused the connection for a reason that retrying will not change.
public struct ConnectionRefused: Error, Sendable, Equatable, CustomStringConvertible {
    /// The CONNACK reason code (MQTT v5, or the v3.1.1 return code).
    public let reasonCode: Int

    public init(reasonCode: Int) { self.reasonCode = reasonCode }

    /// Refusals a configuration change must fix (v5 0x84–0x87, 0x8A, 0x8C; v3.1.1 1, 2, 4, 5).
    public static func isPermanent(_ code: Int) -> Bool { [0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 1, 2, 4, 5].contains(code) }

    public var description: String {
        let reason =
            switch reasonCode {
            case 0x84, 1: "unsupported protocol version"
            case 0x85, 2: "client identifier not valid"
            case 0x86, 4: "bad user name or password"
            case 0x87, 5: "not authorized"
            case 0x8A: "banned"
            case 0x8C: "bad authentication method"
            default: "reason \(reasonCode)"
            }
        return "the broker refused the connection: \(reason) (reason code \(reasonCode)); check --username, --password-file and the broker's ACL"
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
