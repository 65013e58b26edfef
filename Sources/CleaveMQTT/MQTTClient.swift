import CMosquitto

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An MQTT v5 client over libmosquitto: the only Swift code that touches it.
///
/// libmosquitto runs its own network thread (`mosquitto_loop_start`), reconnects
/// with exponential back-off, and calls back on that thread; the callbacks only
/// copy what they got and yield it into ``events``, so they never block it.
/// libmosquitto's API is thread-safe in threaded mode, which is why the class is
/// `@unchecked Sendable`: its only state is the handle and the event sink.
public final class MQTTClient: @unchecked Sendable {
    /// Connection changes and received messages, in order.
    public let events: AsyncStream<MQTTEvent>
    private let sink: EventSink
    private let handle: OpaquePointer
    private let configuration: MQTTConfiguration

    private static let libraryReady: Void = { mosquitto_lib_init() }()

    /// Creates a client; nothing touches the network until ``connect()``.
    public init(_ configuration: MQTTConfiguration) throws {
        _ = Self.libraryReady
        self.configuration = configuration
        let (stream, continuation) = AsyncStream<MQTTEvent>.makeStream(bufferingPolicy: .unbounded)
        events = stream
        sink = EventSink(continuation)
        guard let handle = mosquitto_new(configuration.clientID, configuration.cleanSession, Unmanaged.passUnretained(sink).toOpaque()) else {
            throw MQTTError(code: Int32(MOSQ_ERR_NOMEM.rawValue), operation: "create client \(configuration.clientID)")
        }
        self.handle = handle
        try MQTTError.check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "select MQTT v5")
        try MQTTError.check(mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1), "set TCP_NODELAY")
        try MQTTError.check(
            mosquitto_reconnect_delay_set(handle, UInt32(configuration.reconnectDelay.minimum), UInt32(configuration.reconnectDelay.maximum), true),
            "set reconnect delay")
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
        mosquitto_disconnect_v5(handle, 0, nil)
        mosquitto_loop_stop(handle, false)
        mosquitto_destroy(handle)
        sink.continuation.finish()
    }

    // MARK: - Connection

    /// Starts the network thread and connects; progress arrives as ``MQTTEvent/connected``.
    public func connect() throws {
        try MQTTError.check(
            mosquitto_connect_async(handle, configuration.host, Int32(configuration.port), Int32(configuration.keepAlive)),
            "connect to \(configuration.host):\(configuration.port)")
        try MQTTError.check(mosquitto_loop_start(handle), "start network thread")
    }

    /// Disconnects cleanly (the will is not sent) and stops the network thread.
    public func disconnect() {
        mosquitto_disconnect_v5(handle, 0, nil)
        mosquitto_loop_stop(handle, false)
    }

    /// Stops the network thread and shuts the socket down without a DISCONNECT, as a
    /// crashed process would: the broker sees the connection drop and publishes the will
    /// at once (waiting for the keep-alive to run out made the test depend on the
    /// broker's timer granularity). For fault tests.
    func abandonConnection() {
        mosquitto_loop_stop(handle, true)
        let socket = mosquitto_socket(handle)
        if socket >= 0 { shutdown(socket, Int32(SHUT_RDWR)) }
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
            EventSink.from(context).continuation.yield(code == 0 ? .connected : .refused(reasonCode: Int(code)))
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

/// Receives callbacks through libmosquitto's `obj` pointer; owned by the client, freed after the handle.
private final class EventSink: Sendable {
    let continuation: AsyncStream<MQTTEvent>.Continuation

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
