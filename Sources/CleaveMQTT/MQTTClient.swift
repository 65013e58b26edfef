import CMosquitto
import CleaveProtocol
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An MQTT v5 client over libmosquitto: the only Swift code that touches it.
///
/// A thread of ours runs libmosquitto's network loop: it connects, reconnects with
/// exponential back-off, and sends the CONNECT properties every time (libmosquitto's own
/// reconnect sends none, which would end an MQTT v5 persistent session at every
/// disconnect). libmosquitto calls back on that thread; the callbacks only copy what they
/// got and yield it into ``events``, so they never block it. libmosquitto's API is
/// thread-safe in threaded mode, which is why the class is `@unchecked Sendable`: its only
/// state is the connection, which owns the handle.
public final class MQTTClient: @unchecked Sendable {
    /// Connection changes and received messages, in order.
    public let events: AsyncStream<MQTTEvent>
    private let connection: MosquittoConnection
    private var handle: OpaquePointer { connection.handle }

    private static let libraryReady: Void = { mosquitto_lib_init() }()

    /// Creates a client; nothing touches the network until ``connect()``.
    public init(_ configuration: MQTTConfiguration) throws {
        _ = Self.libraryReady
        let (stream, continuation) = AsyncStream<MQTTEvent>.makeStream(bufferingPolicy: .unbounded)
        events = stream
        let sink = EventSink(continuation)
        let persistent = configuration.sessionExpiry != nil
        guard
            let handle = mosquitto_new(
                configuration.clientID, persistent ? false : configuration.cleanSession, Unmanaged.passUnretained(sink).toOpaque())
        else {
            throw MQTTError(code: Int32(MOSQ_ERR_NOMEM.rawValue), operation: "create client \(configuration.clientID)")
        }
        connection = MosquittoConnection(handle: handle, sink: sink, configuration: configuration)
        try MQTTError.check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "select MQTT v5")
        try MQTTError.check(mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1), "set TCP_NODELAY")
        try MQTTError.check(mosquitto_threaded_set(handle, true), "select threaded mode")
        if configuration.username != nil || configuration.password != nil {
            try MQTTError.check(mosquitto_username_pw_set(handle, configuration.username, configuration.password), "set credentials")
        }
        if let tls = configuration.tls {
            try MQTTError.check(mosquitto_tls_set(handle, tls.caFile, nil, tls.certificateFile, tls.keyFile, nil), "configure TLS")
        }
        if let will = configuration.will {
            try MQTTError.check(
                will.payload.withUnsafeBytes {
                    mosquitto_will_set_v5(handle, will.topic, Int32(will.payload.count), $0.baseAddress, Int32(will.qos), will.retain, nil)
                },
                "set will on \(will.topic)")
        }
        installCallbacks()
    }

    deinit {
        // The network thread holds the connection until it has seen the stop and exits.
        connection.stop(sendDisconnect: true)
    }

    // MARK: - Connection

    /// Starts the network thread, which connects and keeps reconnecting; progress arrives as
    /// ``MQTTEvent/connected`` and ``MQTTEvent/disconnected(code:)``.
    public func connect() throws {
        guard connection.configuration.port > 0 && connection.configuration.port < 65536 else {
            throw MQTTError(
                code: Int32(MOSQ_ERR_INVAL.rawValue), operation: "connect to \(connection.configuration.host):\(connection.configuration.port)")
        }
        connection.start()
    }

    /// Disconnects cleanly (the will is not sent) and stops the network thread (waits up to
    /// two seconds for it: a TCP connect in progress cannot be interrupted).
    public func disconnect() {
        connection.stop(sendDisconnect: true)
        connection.waitUntilStopped(seconds: 2)
    }

    /// Stops the network thread and shuts the socket down without a DISCONNECT, as a
    /// crashed process would: the broker sees the connection drop and publishes the will
    /// at once (waiting for the keep-alive to run out made the test depend on the
    /// broker's timer granularity). For fault tests.
    func abandonConnection() {
        connection.stop(sendDisconnect: false)
        let socket = mosquitto_socket(handle)
        if socket >= 0 { shutdown(socket, Int32(SHUT_RDWR)) }
        connection.waitUntilStopped(seconds: 2)
    }

    // MARK: - Messages

    /// Publishes `message`; with QoS 1 libmosquitto retries until the broker acknowledges.
    public func publish(_ message: MQTTMessage) throws {
        var properties: OpaquePointer? = nil
        defer { mosquitto_property_free_all(&properties) }
        if let topic = message.responseTopic {
            try MQTTError.check(mosquitto_property_add_string(&properties, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), topic), "add response topic")
        }
        if let data = message.correlationData {
            try MQTTError.check(
                data.withUnsafeBytes {
                    mosquitto_property_add_binary(&properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), $0.baseAddress, UInt16(data.count))
                },
                "add correlation data")
        }
        for (key, value) in message.userProperties.sorted(by: { $0.key < $1.key }) {
            try MQTTError.check(
                mosquitto_property_add_string_pair(&properties, Int32(MQTT_PROP_USER_PROPERTY.rawValue), key, value), "add user property")
        }
        let code = message.payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(handle, nil, message.topic, Int32(bytes.count), bytes.baseAddress, Int32(message.qos), message.retain, properties)
        }
        try MQTTError.check(code, "publish to \(message.topic)")
    }

    /// Subscribes to `pattern` (wildcards and `$share/…` allowed) at `qos`.
    public func subscribe(_ pattern: String, qos: Int = 1) throws {
        try MQTTError.check(mosquitto_subscribe_v5(handle, nil, pattern, Int32(qos), 0, nil), "subscribe to \(pattern)")
    }

    /// Ends the subscription to `pattern` (exactly as subscribed).
    public func unsubscribe(_ pattern: String) throws {
        try MQTTError.check(mosquitto_unsubscribe_v5(handle, nil, pattern, nil), "unsubscribe from \(pattern)")
    }

    // MARK: - Callbacks (on libmosquitto's thread)

    private func installCallbacks() {
        mosquitto_connect_v5_callback_set(handle) { _, context, code, _, _ in
            let sink = EventSink.from(context)
            sink.answered.store(true, ordering: .releasing)
            if code == 0 { sink.established.store(true, ordering: .releasing) }
            sink.continuation.yield(code == 0 ? .connected : .refused(reasonCode: Int(code)))
        }
        mosquitto_disconnect_v5_callback_set(handle) { _, context, code, _ in
            EventSink.from(context).continuation.yield(.disconnected(code: Int(code)))
        }
        mosquitto_message_v5_callback_set(handle) { _, context, message, properties in
            guard let message else { return }
            EventSink.from(context).continuation.yield(.message(MQTTMessage(copying: message.pointee, properties: properties)))
        }
    }
}

/// Receives callbacks through libmosquitto's `obj` pointer; owned by the connection, freed after the handle.
final class EventSink: Sendable {
    let continuation: AsyncStream<MQTTEvent>.Continuation
    /// Set when the broker accepted a connection; the network loop then resets its back-off.
    let established = Atomic<Bool>(false)
    /// Set when the broker answered a CONNECT at all (accepted or refused).
    let answered = Atomic<Bool>(false)

    init(_ continuation: AsyncStream<MQTTEvent>.Continuation) { self.continuation = continuation }

    static func from(_ context: UnsafeMutableRawPointer?) -> EventSink {
        Unmanaged<EventSink>.fromOpaque(context!).takeUnretainedValue()
    }
}

extension MQTTMessage {
    /// Copies a libmosquitto message and its v5 properties into Swift values.
    fileprivate init(copying message: mosquitto_message, properties: OpaquePointer?) {
        let payload: [UInt8] = message.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(message.payloadlen))) } ?? []
        var responseTopic: String?
        var correlation: [UInt8]?
        var user: [String: String] = [:]
        var text: UnsafeMutablePointer<CChar>? = nil
        if mosquitto_property_read_string(properties, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &text, false) != nil, let text {
            responseTopic = String(cString: text)
            free(text)
        }
        var binary: UnsafeMutableRawPointer? = nil
        var length: UInt16 = 0
        if mosquitto_property_read_binary(properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &binary, &length, false) != nil, let binary {
            correlation = Array(UnsafeRawBufferPointer(start: binary, count: Int(length)))
            free(binary)
        }
        var cursor = properties
        var skip = false
        while true {
            var name: UnsafeMutablePointer<CChar>? = nil
            var value: UnsafeMutablePointer<CChar>? = nil
            guard let found = mosquitto_property_read_string_pair(cursor, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &value, skip) else { break }
            if let name, let value { user[String(cString: name)] = String(cString: value) }
            free(name)
            free(value)
            cursor = found
            skip = true
        }
        self.init(
            topic: String(cString: message.topic), payload: payload, qos: Int(message.qos), retain: message.retain,
            responseTopic: responseTopic, correlationData: correlation, userProperties: user)
    }
}

extension MQTTClient: MessageTransport {}
