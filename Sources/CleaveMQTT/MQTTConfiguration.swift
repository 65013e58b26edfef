import CleaveProtocol

/// How to reach and identify with a broker.
public struct MQTTConfiguration: Sendable {
    /// A message the broker publishes if this client vanishes.
    public struct Will: Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: Int
        public var retain: Bool

        /// A last-will message.
        public init(topic: String, payload: [UInt8], qos: Int = 1, retain: Bool = true) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }

    /// TLS files (PEM paths) for an encrypted listener.
    public struct TLS: Sendable {
        public var caFile: String
        public var certificateFile: String?
        public var keyFile: String?

        /// TLS with a CA file and an optional client certificate.
        public init(caFile: String, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    public var host: String
    public var port: Int
    /// Client identifier; unique per broker.
    public var clientID: String
    /// Start with no stored session (QoS 1 messages are not kept while offline).
    public var cleanSession: Bool
    /// Keep-alive interval, in seconds.
    public var keepAlive: Int
    public var username: String?
    public var password: String?
    public var will: Will?
    public var tls: TLS?
    /// Reconnect back-off: first delay and ceiling, in seconds (doubling in between).
    public var reconnectDelay: (minimum: Int, maximum: Int)
    /// Seconds the broker keeps this client's session (subscriptions and QoS 1 messages
    /// for it) after a disconnect: an MQTT v5 persistent session, sent with every connect.
    /// Nil: a clean session (and ``cleanSession`` applies).
    public var sessionExpiry: Int?

    /// A configuration with defaults for a local broker.
    public init(
        host: String = "127.0.0.1", port: Int = 1883, clientID: String, cleanSession: Bool = true, keepAlive: Int = 10,
        username: String? = nil, password: String? = nil, will: Will? = nil, tls: TLS? = nil,
        reconnectDelay: (minimum: Int, maximum: Int) = (1, 16), sessionExpiry: Int? = nil
    ) {
        self.sessionExpiry = sessionExpiry
        self.host = host
        self.port = port
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.keepAlive = keepAlive
        self.username = username
        self.password = password
        self.will = will
        self.tls = tls
        self.reconnectDelay = reconnectDelay
    }
}
