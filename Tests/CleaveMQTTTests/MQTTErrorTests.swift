import CMosquitto
import Testing

@testable import CleaveMQTT

@Suite struct MQTTErrorTests {
    @Test func everyLibmosquittoCodeHasAKind() {
        let codes: [mosq_err_t] = [
            MOSQ_ERR_AUTH_CONTINUE, MOSQ_ERR_NO_SUBSCRIBERS, MOSQ_ERR_SUB_EXISTS, MOSQ_ERR_CONN_PENDING, MOSQ_ERR_NOMEM, MOSQ_ERR_PROTOCOL,
            MOSQ_ERR_INVAL, MOSQ_ERR_NO_CONN, MOSQ_ERR_CONN_REFUSED, MOSQ_ERR_NOT_FOUND, MOSQ_ERR_CONN_LOST, MOSQ_ERR_TLS, MOSQ_ERR_PAYLOAD_SIZE,
            MOSQ_ERR_NOT_SUPPORTED, MOSQ_ERR_AUTH, MOSQ_ERR_ACL_DENIED, MOSQ_ERR_UNKNOWN, MOSQ_ERR_ERRNO, MOSQ_ERR_EAI, MOSQ_ERR_PROXY,
            MOSQ_ERR_PLUGIN_DEFER, MOSQ_ERR_KEEPALIVE, MOSQ_ERR_LOOKUP, MOSQ_ERR_MALFORMED_PACKET, MOSQ_ERR_DUPLICATE_PROPERTY,
            MOSQ_ERR_TLS_HANDSHAKE, MOSQ_ERR_QOS_NOT_SUPPORTED, MOSQ_ERR_OVERSIZE_PACKET, MOSQ_ERR_OCSP, MOSQ_ERR_TIMEOUT,
            MOSQ_ERR_RETAIN_NOT_SUPPORTED, MOSQ_ERR_TOPIC_ALIAS_INVALID, MOSQ_ERR_ADMINISTRATIVE_ACTION, MOSQ_ERR_ALREADY_EXISTS,
        ]
        var kinds: [MQTTError.Kind] = []
        for code in codes {
            let error = MQTTError(code: Int32(code.rawValue), operation: "probe")
            #expect(error.kind != .other, "code \(code.rawValue)")
            #expect(error.description.contains("probe failed"))
            kinds.append(error.kind)
        }
        #expect(Set(kinds.map { "\($0)" }).count == codes.count, "each code maps to its own kind")
        #expect(MQTTError(code: 999, operation: "probe").kind == .other)
        #expect(throws: MQTTError(code: 3, operation: "x")) { try MQTTError.check(3, "x") }
    }
}
