import CleaveSupport
import Foundation
import Testing

@testable import CleaveFleet
@testable import CleaveIdentity

@Suite struct SignedMessageTests {
    let key = FleetSigningKey()
    let topic = "cleave/v1/devices/pi-7/control"
    let payload = Array(#"{"version":1,"assignment":null}"#.utf8)

    @Test func aSealedMessageOpensWithTheFleetKeyOnItsTopic() throws {
        let sealed = try key.seal(payload, topic: topic, issued: 1_700_000_000_123)
        let opened = try key.publicKey.open(sealed, topic: topic)
        #expect(opened == SignedEnvelope(issued: 1_700_000_000_123, payload: payload))
        #expect(SignedEnvelope.isSigned(sealed) && !SignedEnvelope.isSigned(payload))
    }

    /// The vector in docs/wire-format.md, computed with Python's `cryptography` (Ed25519
    /// signatures are deterministic, so sealing gives exactly these bytes).
    @Test func theWireFormatVectorOpensAndIsReproduced() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path
        let document = String(decoding: try SystemCall.readFile("\(repository)/docs/wire-format.md"), as: UTF8.self)
        let section = try #require(document.components(separatedBy: "## Signed envelope").last)
        let block = try #require(section.components(separatedBy: "```").dropFirst().first)
        let vector = try #require(Hex.bytes(block.filter { !$0.isWhitespace }))
        let key = try FleetSigningKey(hex: SHA256.hexString(Array(0..<32)))
        #expect(key.publicKey.hex == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
        let topic = "cleave/v1/devices/pi-1/control"
        let opened = try key.publicKey.open(vector, topic: topic)
        #expect(opened.issued == 1_700_000_000_000 && opened.payload == Array(#"{"version":1,"assignment":null}"#.utf8))
        #expect(try key.seal(opened.payload, topic: topic, issued: opened.issued) == vector)
    }

    @Test func keysRoundTripThroughTheirHexFiles() throws {
        let again = try FleetSigningKey(hex: key.hex + "\n")
        #expect(again.publicKey == key.publicKey)
        #expect(try FleetPublicKey(hex: key.publicKey.hex) == key.publicKey)
        #expect(throws: FleetKeyError.self) { try FleetSigningKey(hex: "12ab") }
        #expect(throws: FleetKeyError.self) { try FleetPublicKey(hex: String(repeating: "g", count: 64)) }
    }

    func refusal(_ bytes: [UInt8], topic: String? = nil, key publicKey: FleetPublicKey? = nil) -> SignatureError.Kind? {
        do {
            _ = try (publicKey ?? key.publicKey).open(bytes, topic: topic ?? self.topic)
            return nil
        } catch {
            return error.kind
        }
    }

    @Test func unsignedTamperedMisdirectedAndForeignMessagesAreRefused() throws {
        let sealed = try key.seal(payload, topic: topic, issued: 42)
        #expect(refusal(payload) == .unsigned)
        #expect(refusal(sealed, topic: "cleave/v1/devices/pi-8/control") == .badSignature, "signed for another device's topic")
        #expect(refusal(sealed, key: FleetSigningKey().publicKey) == .wrongKey)
        // Every single-byte change after the magic is caught.
        for index in 4..<sealed.count {
            var tampered = sealed
            tampered[index] ^= 0x20
            #expect(refusal(tampered) != nil, "byte \(index) changed")
        }
        #expect(refusal(Array(sealed.dropLast())) == .malformed)
        #expect(refusal(Array(sealed.prefix(10))) == .malformed)
    }

    /// 100,000 mutated and truncated envelopes: each refused with a reason, none traps.
    @Test func fuzzedEnvelopesNeverTrapAndNeverVerify() throws {
        var generator = SeededGenerator(seed: 21)
        let sealed = try key.seal(payload, topic: topic, issued: 7)
        var refused = 0
        for _ in 0..<100_000 {
            var bytes = sealed
            switch generator.next() % 4 {
            case 0: bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count))))
            case 1:
                for _ in 0...(generator.next() % 4) {
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
            case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: Int(generator.next() % UInt64(bytes.count)))
            default:
                // A length field that lies.
                let length = UInt32(truncatingIfNeeded: generator.next())
                bytes.replaceSubrange(21..<25, with: (0..<4).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) })
            }
            if bytes == sealed { continue }
            if refusal(bytes) != nil { refused += 1 }
        }
        #expect(refused > 99_000, "every changed envelope is refused (a few mutations change nothing)")
    }

    @Test func theReplayGuardRefusesOlderMessages() throws {
        var guardian = ReplayGuard()
        try guardian.admit(100)
        try guardian.admit(100)  // the same message again: a QoS 1 redelivery
        try guardian.admit(200)
        #expect(throws: SignatureError.self) { try guardian.admit(150) }
        #expect(guardian.newest == 200)
    }

    @Test func theIssueClockNeverRepeats() {
        var clock = IssueClock()
        let stamps = (0..<1000).map { _ in clock.next() }
        #expect(zip(stamps, stamps.dropFirst()).allSatisfy { $0 < $1 })
    }

    /// The hash `mosquitto_passwd` would write; the value from Python's hashlib.pbkdf2_hmac.
    @Test func mosquittoPasswordHashesMatchPBKDF2SHA512() {
        #expect(
            MosquittoPassword.hash("secret-device-a", salt: Array(0..<12))
                == "$7$101$AAECAwQFBgcICQoL$KZxeg6dK4UNu7HY7eaZ8xpELxwztwPh3UMDatLeSURavS6DWemnFbkaPcI+hlce1EcSoMzX4RWYID7SlczypPA==")
    }
}
