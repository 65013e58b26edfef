import ArgumentParser
import CleaveFleet
import Foundation

struct FleetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "The fleet's identity: a CA and TLS certificates, broker passwords and ACL, and the key that signs control messages.",
        discussion: """
            Run on the coordinator's machine (the broker's, usually). `init` makes the fleet folder; `enroll ID` \
            adds a device or coordinator and writes what it needs to FOLDER/members/ID (copy that folder to the \
            board and pass it as --member); `revoke ID` takes it out again; `list` shows the members. After \
            enroll or revoke, tell Mosquitto to read its password file again: `systemctl reload mosquitto` \
            (SIGHUP). The broker configuration to include is FOLDER/mosquitto.conf.
            """,
        subcommands: [FleetInitCommand.self, FleetEnrollCommand.self, FleetRevokeCommand.self, FleetListCommand.self])
}

struct FleetFolderOption: ParsableArguments {
    @Option(name: .customLong("dir"), help: "The fleet folder.") var directory = "/etc/cleave/fleet"
}

struct FleetInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Make a fleet folder: CA, broker certificate, signing key, password file, ACL, broker configuration.",
        discussion: """
            The CA and certificates are ECDSA P-256 (the CA valid 20 years, member certificates 5); the \
            signing key is Ed25519. Keys are readable by their owner only (the broker's key and the password \
            file also by the mosquitto group, when there is one: run as root).
            """)

    @OptionGroup var folder: FleetFolderOption
    @Option(
        name: .customLong("host"), parsing: .singleValue,
        help: "A name or IPv4 address agents use to reach the broker (repeat; localhost and 127.0.0.1 always).")
    var hosts: [String] = []
    @Option(help: "The broker's TLS port.") var port = 8883

    func run() throws {
        let authority = try FleetAuthority.create(directory: folder.directory, hosts: hosts, port: port)
        print("fleet made in \(authority.directory)")
        print("  broker certificate for: \(authority.registry.hosts.joined(separator: ", "))")
        print("  fleet key (boards pin it): \(try authority.publicKey.hex)")
        print("  broker configuration: \(authority.directory)/mosquitto.conf (TLS on port \(port), client certificates required)")
        print("next: cleave fleet enroll --dir \(authority.directory) --coordinator coordinator-1, then one enroll per device")
    }
}

struct FleetEnrollCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Add a member: a password, a client certificate and, for a coordinator, its ACL section and the signing key.",
        discussion: """
            Writes FOLDER/members/ID: ID.crt and ID.key (its TLS certificate, common name ID), password, \
            ca.crt, fleet.pub (and signing.key for a coordinator). Copy the folder to the member and start it \
            with `--member PATH`. The password's hash goes into the broker's password file.
            """)

    @OptionGroup var folder: FleetFolderOption
    @Argument(help: "The member id: the device id (its MQTT username and client id), or the coordinator's id.") var id: String
    @Flag(help: "Enroll a coordinator (may publish control messages, results and models; gets the signing key).") var coordinator = false

    func run() throws {
        var authority = try FleetAuthority(directory: folder.directory)
        let path = try authority.enroll(id, role: coordinator ? .coordinator : .device)
        print("enrolled \(id) as a \(coordinator ? "coordinator" : "device"): its files are in \(path)")
        print("reload the broker so that it reads the new password: systemctl reload mosquitto (or kill -HUP its pid)")
    }
}

struct FleetRevokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Take a member out: its password leaves the broker's password file, its folder is deleted.",
        discussion: """
            The broker refuses its next login once it has read the password file again (systemctl reload \
            mosquitto); a connection it holds now ends when the broker restarts. Its certificate stays \
            cryptographically valid until it expires, but without a password it cannot log in.
            """)

    @OptionGroup var folder: FleetFolderOption
    @Argument(help: "The member id.") var id: String

    func run() throws {
        var authority = try FleetAuthority(directory: folder.directory)
        try authority.revoke(id)
        print("revoked \(id); reload the broker: systemctl reload mosquitto (or kill -HUP its pid)")
    }
}

struct FleetListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show the fleet's members.")

    @OptionGroup var folder: FleetFolderOption

    func run() throws {
        let authority = try FleetAuthority(directory: folder.directory)
        print("fleet \(authority.directory): broker \(authority.registry.hosts.joined(separator: ", ")), TLS port \(authority.registry.port)")
        print("id".padding(toLength: 24, withPad: " ", startingAt: 0) + "role         enrolled              revoked")
        for member in authority.registry.members {
            print(
                member.id.padding(toLength: 24, withPad: " ", startingAt: 0) + member.role.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)
                    + member.enrolled.padding(toLength: 22, withPad: " ", startingAt: 0) + (member.revoked ?? "-"))
        }
    }
}
