import CMosquitto

/// A libmosquitto call failed.
///
/// ``kind`` names every `MOSQ_ERR_*` code libmosquitto 2.0 defines; ``code`` keeps the raw
/// value, so a newer library's unknown codes still arrive as ``Kind/other``.
public struct MQTTError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The failure classes of libmosquitto, one per `MOSQ_ERR_*` code.
    public enum Kind: Sendable, Equatable {
        case authContinue, noSubscribers, subscriptionExists, connectionPending
        case noMemory, protocolError, invalidArguments, notConnected, connectionRefused, notFound
        case connectionLost, tls, payloadTooLarge, notSupported, authentication, accessDenied, unknown
        case systemError, nameResolution, proxy, pluginDefer, keepAliveExpired, lookup, malformedPacket
        case duplicateProperty, tlsHandshake, qosNotSupported, oversizePacket, ocsp, timeout
        case retainNotSupported, topicAliasInvalid, administrativeAction, alreadyExists
        /// A code this build does not know.
        case other

        init(code: Int32) {
            let table: [Int32: Kind] = [
                -4: .authContinue, -3: .noSubscribers, -2: .subscriptionExists, -1: .connectionPending,
                1: .noMemory, 2: .protocolError, 3: .invalidArguments, 4: .notConnected, 5: .connectionRefused, 6: .notFound,
                7: .connectionLost, 8: .tls, 9: .payloadTooLarge, 10: .notSupported, 11: .authentication, 12: .accessDenied,
                13: .unknown, 14: .systemError, 15: .nameResolution, 16: .proxy, 17: .pluginDefer, 19: .keepAliveExpired,
                20: .lookup, 21: .malformedPacket, 22: .duplicateProperty, 23: .tlsHandshake, 24: .qosNotSupported,
                25: .oversizePacket, 26: .ocsp, 27: .timeout, 28: .retainNotSupported, 29: .topicAliasInvalid,
                30: .administrativeAction, 31: .alreadyExists,
            ]
            self = table[code] ?? .other
        }
    }

    /// The raw `MOSQ_ERR_*` code (or an MQTT v5 reason code for refused connections).
    public let code: Int32
    /// What Cleave was doing (`connect to 127.0.0.1:1883`, `publish cleave/v1/…`).
    public let operation: String

    /// The class of failure.
    public var kind: Kind { Kind(code: code) }

    public var description: String {
        "MQTT \(operation) failed: \(String(cString: mosquitto_strerror(code))) (MOSQ_ERR \(code))"
    }

    /// libmosquitto's sentence for a `MOSQ_ERR_*` code (a disconnection's code, say).
    public static func reason(_ code: Int) -> String { String(cString: mosquitto_strerror(Int32(clamping: code))) }

    /// Throws when `code` is not `MOSQ_ERR_SUCCESS`: the one place C return codes become errors.
    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
        guard code == Int32(MOSQ_ERR_SUCCESS.rawValue) else { throw MQTTError(code: code, operation: operation()) }
    }
}
