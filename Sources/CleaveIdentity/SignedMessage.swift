import CleaveSupport
import Crypto
import FoundationEssentials

/// The fleet's Ed25519 signing key, held by coordinators (`cleave fleet init` makes it). It
/// signs the messages that tell a board what to run — control messages, whose assignment names
/// each model artifact by SHA-256, so that a signed assignment also vouches for the artifacts.
public struct FleetSigningKey: Sendable {
    let key: Curve25519.Signing.PrivateKey

    /// A new random key (from the system's generator).
    public init() { key = Curve25519.Signing.PrivateKey() }

    /// The key whose 32-byte seed `hex` spells (64 hex digits), as in a key file.
    public init(hex: String) throws(FleetKeyError) {
        guard let seed = Hex.bytes(hex), seed.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: seed) else {
            throw FleetKeyError("a fleet signing key is 64 hex digits (an Ed25519 seed)")
        }
        self.key = key
    }

    /// The seed as 64 hex digits (what a key file holds).
    public var hex: String { Hex.string([UInt8](key.rawRepresentation)) }

    public var publicKey: FleetPublicKey { FleetPublicKey(key.publicKey) }

    /// `payload` in a signed envelope for `topic`, stamped `issued` (see ``SignedEnvelope``).
    public func seal(_ payload: [UInt8], topic: String, issued: UInt64) throws -> [UInt8] {
        var writer = ByteWriter(capacity: SignedEnvelope.headerBytes + payload.count + SignedEnvelope.signatureBytes)
        writer.append(contentsOf: SignedEnvelope.magic)
        writer.u8(SignedEnvelope.version)
        writer.append(contentsOf: publicKey.fingerprint)
        writer.integer(issued)
        writer.integer(UInt32(payload.count))
        writer.append(contentsOf: payload)
        let signature = try key.signature(for: SignedEnvelope.signedBytes(topic: topic, envelope: writer.bytes[...]))
        writer.append(contentsOf: signature)
        return writer.bytes
    }
}

/// The fleet's public key, pinned on every board (`--fleet-key`): messages that claim to come
/// from the coordinators are taken only when it verifies them.
public struct FleetPublicKey: Sendable, Equatable {
    let key: Curve25519.Signing.PublicKey

    init(_ key: Curve25519.Signing.PublicKey) { self.key = key }

    /// The key that `hex` spells (64 hex digits), as in `fleet.pub`.
    public init(hex: String) throws(FleetKeyError) {
        guard let raw = Hex.bytes(hex), raw.count == 32, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw FleetKeyError("a fleet public key is 64 hex digits (an Ed25519 public key)")
        }
        self.key = key
    }

    public static func == (lhs: FleetPublicKey, rhs: FleetPublicKey) -> Bool { lhs.key.rawRepresentation == rhs.key.rawRepresentation }

    /// 64 hex digits.
    public var hex: String { Hex.string([UInt8](key.rawRepresentation)) }

    /// The first 8 bytes of the key's SHA-256: names the key in an envelope and in logs.
    public var fingerprint: [UInt8] { Array(SHA256.hash([UInt8](key.rawRepresentation)).prefix(8)) }

    /// The payload of a signed envelope received on `topic`, or why it cannot be trusted.
    public func open(_ bytes: [UInt8], topic: String) throws(SignatureError) -> SignedEnvelope {
        guard bytes.starts(with: SignedEnvelope.magic) else {
            throw SignatureError(.unsigned, "the message is not signed (this device is pinned to fleet key \(Hex.string(fingerprint)))")
        }
        var reader = ByteReader(bytes)
        do {
            try reader.skip(SignedEnvelope.magic.count)
            let version = try reader.integer(UInt8.self)
            guard version == SignedEnvelope.version else {
                throw SignatureError(.malformed, "signed envelope version \(version); this build reads version \(SignedEnvelope.version)")
            }
            let signer = Array(try reader.take(8))
            guard signer == fingerprint else {
                throw SignatureError(
                    .wrongKey, "signed by key \(Hex.string(signer)), not by the fleet key \(Hex.string(fingerprint)) this device is pinned to")
            }
            let issued = try reader.integer(UInt64.self)
            let length = Int(try reader.integer(UInt32.self))
            guard reader.remaining == length + SignedEnvelope.signatureBytes else {
                throw SignatureError(
                    .malformed,
                    "signed envelope says \(length) payload bytes, which leaves \(reader.remaining - length) for the signature, not \(SignedEnvelope.signatureBytes)"
                )
            }
            let payload = Array(try reader.take(length))
            let signature = try reader.take(SignedEnvelope.signatureBytes)
            let signed = SignedEnvelope.signedBytes(topic: topic, envelope: bytes[..<(bytes.count - SignedEnvelope.signatureBytes)])
            guard key.isValidSignature(signature, for: signed) else {
                throw SignatureError(.badSignature, "the signature does not verify: the message was altered, or signed for another topic")
            }
            return SignedEnvelope(issued: issued, payload: payload)
        } catch let error as SignatureError {
            throw error
        } catch {
            throw SignatureError(.malformed, "signed envelope truncated (\(bytes.count) bytes)")
        }
    }
}

/// A verified message: what was signed and when.
///
/// On the wire (little-endian): `CLSG`, version 1 (1 byte), the signer's key fingerprint
/// (8 bytes), `issued` (8 bytes: milliseconds since 1970 on the signer's clock, strictly
/// increasing per signer), the payload's length (4 bytes), the payload, and a 64-byte Ed25519
/// signature over `cleave signed message v1`, a zero byte, the topic, a zero byte and every
/// envelope byte before the signature — so a message signed for one device's topic does not
/// verify on another's.
public struct SignedEnvelope: Sendable, Equatable {
    public var issued: UInt64
    public var payload: [UInt8]

    static let magic: [UInt8] = Array("CLSG".utf8)
    static let version: UInt8 = 1
    static let headerBytes = 4 + 1 + 8 + 8 + 4
    static let signatureBytes = 64
    static let domain: [UInt8] = Array("cleave signed message v1".utf8) + [0]

    static func signedBytes(topic: String, envelope: ArraySlice<UInt8>) -> [UInt8] {
        domain + Array(topic.utf8) + [0] + envelope
    }

    /// Whether `bytes` look like an envelope (an unsigned JSON message starts with `{`).
    public static func isSigned(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }
}

/// Why a signed message was refused.
public struct SignatureError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case unsigned, malformed, wrongKey = "wrong-key", badSignature = "bad-signature", replayed
    }

    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// A key that cannot be read.
public struct FleetKeyError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Refuses a signed message older than the newest one taken: a recorded message played again (a
/// replay) must not put a board back on an old model. The same message again (QoS 1
/// redelivery, the retained copy after a reconnect) is taken. In memory only: a restarted
/// client starts from zero (control messages are kept fresh by the agent's nonce instead; the
/// federated client's use is described in `FederatedClient`).
public struct ReplayGuard: Sendable {
    public private(set) var newest: UInt64 = 0

    public init() {}

    /// Takes a message stamped `issued`, or refuses it as a replay.
    public mutating func admit(_ issued: UInt64) throws(SignatureError) {
        guard issued >= newest else {
            throw SignatureError(.replayed, "issued at \(issued) ms, older than the message taken before (issued at \(newest) ms)")
        }
        newest = issued
    }
}

/// Stamps for ``FleetSigningKey/seal(_:topic:issued:)``: the wall clock in milliseconds, but
/// never the same or an earlier value twice in one process.
public struct IssueClock: Sendable {
    private var last: UInt64 = 0

    public init() {}

    public mutating func next() -> UInt64 {
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        last = max(now, last + 1)
        return last
    }
}

/// Lower-case hex.
enum Hex {
    static func string(_ bytes: [UInt8]) -> String { SHA256.hexString(bytes) }

    static func bytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.filter { !$0.isWhitespace }.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var result: [UInt8] = []
        result.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            result.append(high << 4 | low)
        }
        return result
    }
}
