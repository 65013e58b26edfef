import CleaveIdentity
import CleaveSupport
import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// A fleet's identity on the coordinator's machine, one folder (`cleave fleet init`): the
/// certificate authority that signs the broker's and every device's TLS certificate, the
/// Ed25519 key that signs what coordinators tell boards, and Mosquitto's password file, ACL and
/// listener configuration — so that enrolling or revoking a device is one command, and the
/// broker's view of who may connect and the fleet's registry cannot drift apart.
///
/// ```
/// FOLDER/fleet.json            the registry: broker host names, members, revoked members
/// FOLDER/ca.crt ca.key         the fleet CA (ECDSA P-256; the key readable by its owner only)
/// FOLDER/broker.crt broker.key the broker's server certificate (host names as subject alt names)
/// FOLDER/signing.key fleet.pub the fleet signing key (Ed25519 seed, hex) and its public half
/// FOLDER/passwd acl            Mosquitto's password file (PBKDF2-SHA512) and ACL
/// FOLDER/mosquitto.conf        the TLS listener using all of the above
/// FOLDER/members/ID/           what one member needs: ca.crt, ID.crt, ID.key, password, fleet.pub
/// ```
public struct FleetAuthority: Sendable {
    public let directory: String
    public private(set) var registry: FleetRegistry

    /// A member's role: devices run agents; coordinators may publish control messages, results
    /// and models (the ACL's `user` sections).
    public enum Role: String, Codable, Sendable { case device, coordinator }

    /// Creates the fleet folder: CA, broker certificate for `hosts` (DNS names or IP
    /// addresses; `localhost` and 127.0.0.1 always), signing key, empty password file, ACL and
    /// broker configuration listening on `port`. Refuses a folder that already holds a fleet.
    public static func create(directory: String, hosts: [String], port: Int = 8883) throws -> FleetAuthority {
        guard !FileManager.default.fileExists(atPath: "\(directory)/fleet.json") else {
            throw FleetError("\(directory) already holds a fleet (fleet.json); `cleave fleet enroll` adds members to it")
        }
        try SystemCall.makeDirectories("\(directory)/members")
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("Cleave fleet")
            CommonName("Cleave fleet CA")
        }
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(caKey.publicKey),
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(20 * 365 * 86_400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(caKey))
        try write(try ca.serializeAsPEM().pemString, to: "\(directory)/ca.crt", private: false)
        try write(caKey.pemRepresentation, to: "\(directory)/ca.key", private: true)

        let brokerHosts = Array(Set(hosts + ["localhost", "127.0.0.1"])).sorted()
        let (brokerCertificate, brokerKey) = try issue(
            commonName: brokerHosts.first { $0 != "localhost" && $0 != "127.0.0.1" } ?? "localhost", usage: .serverAuth,
            alternativeNames: brokerHosts, caKey: caKey, ca: ca)
        try write(brokerCertificate, to: "\(directory)/broker.crt", private: false)
        try write(brokerKey, to: "\(directory)/broker.key", private: true, brokerReads: true)

        let signing = FleetSigningKey()
        try write(signing.hex + "\n", to: "\(directory)/signing.key", private: true)
        try write(signing.publicKey.hex + "\n", to: "\(directory)/fleet.pub", private: false)

        let authority = FleetAuthority(directory: directory, registry: FleetRegistry(hosts: brokerHosts, port: port))
        try authority.save()
        return authority
    }

    /// The fleet in `directory`.
    public init(directory: String) throws {
        let path = "\(directory)/fleet.json"
        guard let bytes = try? SystemCall.readFile(path) else {
            throw FleetError("\(directory) holds no fleet (no fleet.json): make one with `cleave fleet init --dir \(directory)`")
        }
        do {
            registry = try JSONDecoder().decode(FleetRegistry.self, from: Data(bytes))
        } catch {
            throw FleetError("\(path) is not a fleet registry: \(error)")
        }
        self.directory = directory
    }

    private init(directory: String, registry: FleetRegistry) {
        self.directory = directory
        self.registry = registry
    }

    /// The fleet's public signing key (what boards pin).
    public var publicKey: FleetPublicKey {
        get throws { try FleetPublicKey(hex: String(decoding: try SystemCall.readFile("\(directory)/fleet.pub"), as: UTF8.self)) }
    }

    /// The signing key (coordinators only).
    public var signingKey: FleetSigningKey {
        get throws { try FleetSigningKey(hex: String(decoding: try SystemCall.readFile("\(directory)/signing.key"), as: UTF8.self)) }
    }

    /// The folder of what member `id` needs.
    public func memberDirectory(_ id: String) -> String { "\(directory)/members/\(id)" }

    /// What an enrolled member logs in with, read from its folder.
    public func credentials(of id: String) throws -> MemberCredentials {
        let folder = memberDirectory(id)
        guard let bytes = try? SystemCall.readFile("\(folder)/password") else {
            throw FleetError("\(id) has no member folder in \(directory): enroll it with `cleave fleet enroll \(id)`")
        }
        return MemberCredentials(
            id: id, password: String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }, caFile: "\(folder)/ca.crt",
            certificateFile: "\(folder)/\(id).crt", keyFile: "\(folder)/\(id).key")
    }

    /// Enrolls `id`: a random password (its PBKDF2 hash in the password file), a client
    /// certificate with `id` as common name, and, for a coordinator, its ACL section. Writes the
    /// member's folder and returns its path. Enrolling a revoked id again is allowed (a new
    /// password and certificate); an enrolled one is refused.
    @discardableResult
    public mutating func enroll(_ id: String, role: Role = .device) throws -> String {
        guard Self.isValidMemberID(id) else {
            throw FleetError("'\(id)' cannot be a member id: use letters, digits, '-', '_' and '.', at most 64 characters")
        }
        if let member = registry.members.first(where: { $0.id == id }), member.revoked == nil {
            throw FleetError("\(id) is enrolled already (since \(member.enrolled)); revoke it first to issue new credentials")
        }
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: String(decoding: try SystemCall.readFile("\(directory)/ca.key"), as: UTF8.self))
        let ca = try Certificate(pemEncoded: String(decoding: try SystemCall.readFile("\(directory)/ca.crt"), as: UTF8.self))
        let (certificate, key) = try Self.issue(commonName: id, usage: .clientAuth, alternativeNames: [], caKey: caKey, ca: ca)
        let password = Self.randomPassword()
        let folder = memberDirectory(id)
        try SystemCall.makeDirectories(folder)
        try Self.write(certificate, to: "\(folder)/\(id).crt", private: false)
        try Self.write(key, to: "\(folder)/\(id).key", private: true)
        try Self.write(password + "\n", to: "\(folder)/password", private: true)
        try Self.write(String(decoding: try SystemCall.readFile("\(directory)/ca.crt"), as: UTF8.self), to: "\(folder)/ca.crt", private: false)
        try Self.write(String(decoding: try SystemCall.readFile("\(directory)/fleet.pub"), as: UTF8.self), to: "\(folder)/fleet.pub", private: false)
        if role == .coordinator {
            try Self.write(
                String(decoding: try SystemCall.readFile("\(directory)/signing.key"), as: UTF8.self), to: "\(folder)/signing.key", private: true)
        }
        registry.members.removeAll { $0.id == id }
        registry.members.append(
            FleetRegistry.Member(id: id, role: role, enrolled: Self.timestamp(), passwordHash: MosquittoPassword.hash(password), revoked: nil))
        try save()
        return folder
    }

    /// Revokes `id`: its password entry leaves the password file (the broker refuses its next
    /// login once it reloads the file: `systemctl reload mosquitto`, or SIGHUP) and the
    /// registry records when. Its certificate stays valid for TLS until it expires, but without
    /// a password entry it cannot log in.
    public mutating func revoke(_ id: String) throws {
        guard let index = registry.members.firstIndex(where: { $0.id == id }) else {
            throw FleetError("\(id) is not a member of this fleet (members: \(registry.members.map(\.id).joined(separator: ", ")))")
        }
        guard registry.members[index].revoked == nil else { throw FleetError("\(id) was revoked already (\(registry.members[index].revoked!))") }
        registry.members[index].revoked = Self.timestamp()
        try save()
        try? FileManager.default.removeItem(atPath: memberDirectory(id))
    }

    /// Writes the registry and everything the broker reads from it: password file, ACL and
    /// the listener configuration.
    func save() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try SystemCall.writeFileAtomically("\(directory)/fleet.json", [UInt8](try encoder.encode(registry)))
        let active = registry.members.filter { $0.revoked == nil }
        try Self.write(active.map { "\($0.id):\($0.passwordHash)\n" }.joined(), to: "\(directory)/passwd", private: true, brokerReads: true)
        try Self.write(acl(coordinators: active.filter { $0.role == .coordinator }.map(\.id)), to: "\(directory)/acl", private: false)
        try Self.write(brokerConfiguration(port: registry.port), to: "\(directory)/mosquitto.conf", private: false)
    }

    /// The ACL: devices act only under their own name (the patterns of `deploy/mosquitto/acl`),
    /// each enrolled coordinator gets the whole Cleave prefix.
    func acl(coordinators: [String]) -> String {
        var text = """
            # Made by `cleave fleet` from \(directory)/fleet.json; edit the fleet, not this file.
            # Devices log in with username = device id (= client id: use_username_as_clientid).
            pattern write cleave/v1/devices/%u/state
            pattern read cleave/v1/devices/%u/control
            pattern read cleave/v1/devices/%u/results
            pattern write cleave/v1/infer/%u
            pattern read cleave/v1/models/#
            pattern read cleave/v1/fl/+/task
            pattern read cleave/v1/fl/+/model
            pattern write cleave/v1/fl/+/clients/%u
            pattern write cleave/v1/fl/+/updates/%u

            """
        for coordinator in coordinators.sorted() { text += "\nuser \(coordinator)\ntopic readwrite cleave/v1/#\n" }
        return text
    }

    /// A Mosquitto listener that takes only TLS clients holding a certificate from the fleet CA
    /// and a password from the fleet's file, with their client id replaced by their username.
    /// `listen` adds a bind address (none: every interface).
    public func brokerConfiguration(port: Int, listen address: String? = nil) -> String {
        """
        # Made by `cleave fleet` (\(directory)). Include it from /etc/mosquitto/conf.d/ or run
        # `mosquitto -c \(directory)/mosquitto.conf`.
        per_listener_settings false
        allow_anonymous false
        # Small frames must not wait for Nagle (40 ms per answer without it).
        set_tcp_nodelay true
        \(accessSettings)
        listener \(port)\(address.map { " \($0)" } ?? "")
        \(listenerSettings)
        """
    }

    /// The broker-wide lines: who may log in, and what each may do.
    public var accessSettings: String {
        """
        password_file \(directory)/passwd
        acl_file \(directory)/acl
        """
    }

    /// The lines that make a listener the fleet's: TLS with the fleet's certificates, a client
    /// certificate required, and the client id replaced by the username, so that nobody can
    /// take over another's session by its client id. They apply to the `listener` line before.
    public var listenerSettings: String {
        """
        cafile \(directory)/ca.crt
        certfile \(directory)/broker.crt
        keyfile \(directory)/broker.key
        require_certificate true
        tls_version tlsv1.2
        use_username_as_clientid true
        """
    }

    // MARK: - Helpers

    /// Certificates are valid from a day before they are made: a board whose clock is behind
    /// (no RTC and fake-hwclock's last saved time, a correction that set it back) still takes
    /// the broker's certificate, and the broker its. With no margin a board whose clock went
    /// back an hour after enrolment could not reconnect (`AgentClockTests`, shown against a
    /// planted `notValidBefore: now`).
    static let backdating: TimeInterval = 86_400

    static func issue(
        commonName: String, usage: ExtendedKeyUsage.Usage, alternativeNames: [String], caKey: P256.Signing.PrivateKey, ca: Certificate
    ) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let now = Date()
        let names: [GeneralName] = alternativeNames.map { name in
            if let address = IPv4(name) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))) }
            return .dnsName(name)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(5 * 365 * 86_400),
            issuer: ca.subject, subject: try DistinguishedName { CommonName(commonName) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([usage])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: .init(caKey))
        return (try certificate.serializeAsPEM().pemString + "\n", key.pemRepresentation + "\n")
    }

    /// A member id becomes a file name, a username, an ACL and a password-file entry: letters,
    /// digits, `-`, `_` and `.` (not first), at most 64.
    static func isValidMemberID(_ id: String) -> Bool {
        guard (1...64).contains(id.utf8.count), id.first != "." else { return false }
        return id.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0))
        }
    }

    /// The four bytes of a dotted IPv4 address, or nil.
    static func IPv4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }

    /// Writes `text` to `path`: private files readable by their owner only — or, with
    /// `brokerReads`, also by the `mosquitto` group where there is one (Mosquitto drops to
    /// that user before it reads its key and password file).
    static func write(_ text: String, to path: String, private isPrivate: Bool, brokerReads: Bool = false) throws {
        try SystemCall.writeFileAtomically(path, Array(text.utf8))
        var mode: Int = isPrivate ? 0o600 : 0o644
        if isPrivate && brokerReads, let group = getgrnam("mosquitto") {
            if chown(path, uid_t.max, group.pointee.gr_gid) == 0 { mode = 0o640 }
        }
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
    }

    /// 24 characters from a 62-letter alphabet (≈ 143 bits), from the system's generator.
    static func randomPassword() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<24).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }

    static func timestamp() -> String { ISO8601DateFormatter().string(from: Date()) }
}

/// A member's login: username (= its id), password and TLS files.
public struct MemberCredentials: Sendable {
    public var id: String
    public var password: String
    public var caFile: String
    public var certificateFile: String
    public var keyFile: String
}

/// `fleet.json`: who is in the fleet.
public struct FleetRegistry: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var id: String
        public var role: FleetAuthority.Role
        public var enrolled: String
        /// The Mosquitto password-file hash of its password (the password itself is only in
        /// the member's folder).
        public var passwordHash: String
        public var revoked: String?
    }

    /// The names in the broker's certificate.
    public var hosts: [String]
    /// The broker's TLS port.
    public var port: Int
    public var members: [Member] = []
}

/// Mosquitto 2's password-file hash: `$7$ITERATIONS$SALT$HASH` with PBKDF2-HMAC-SHA512 over a
/// 12-byte random salt, 101 iterations (`mosquitto_passwd`'s default), both base64.
public enum MosquittoPassword {
    public static let iterations = 101

    public static func hash(_ password: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<12).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return hash(password, salt: salt)
    }

    public static func hash(_ password: String, salt: [UInt8], iterations: Int = iterations) -> String {
        "$7$\(iterations)$\(Data(salt).base64EncodedString())$\(Data(pbkdf2(password: Array(password.utf8), salt: salt, iterations: iterations)).base64EncodedString())"
    }

    /// PBKDF2 with HMAC-SHA512, one 64-byte block (RFC 8018, section 5.2).
    static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var block = Array(HMAC<SHA512>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = block
        for _ in 1..<max(1, iterations) {
            block = Array(HMAC<SHA512>.authenticationCode(for: block, using: key))
            for index in result.indices { result[index] ^= block[index] }
        }
        return result
    }
}

/// A fleet operation that cannot be done, and why.
public struct FleetError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
