import CMosquitto

/// A libmosquitto call failed; `code` is its `MOSQ_ERR_*` value.
public struct MQTTError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `MOSQ_ERR_*` code.
    public let code: Int32
    /// What Cleave was doing (`connect to 127.0.0.1:1883`, `publish cleave/v1/…`).
    public let operation: String

    public var description: String {
        "MQTT \(operation) failed: \(String(cString: mosquitto_strerror(code))) (MOSQ_ERR \(code))"
    }

    /// Throws when `code` is not `MOSQ_ERR_SUCCESS`: the one place C return codes become errors.
    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
        guard code == Int32(MOSQ_ERR_SUCCESS.rawValue) else { throw MQTTError(code: code, operation: operation()) }
    }
}
