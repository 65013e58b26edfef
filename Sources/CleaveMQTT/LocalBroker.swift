import CleaveSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A Mosquitto broker started from `PATH` on a free loopback port with a generated
/// configuration, for `cleave demo` and the integration tests.
public final class LocalBroker: Sendable {
    /// The port it listens on (127.0.0.1 only).
    public let port: Int
    /// Its configuration and log folder.
    public let directory: String
    private let pid: pid_t

    /// Why a broker could not be started.
    public struct LaunchError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Starts `mosquitto` on `port` (default: a free one) and waits until it accepts connections
    /// (at most `timeout` seconds).
    ///
    /// `extraConfiguration` lines are appended to the generated file (ACLs, passwords).
    public init(port requestedPort: Int? = nil, extraConfiguration: String = "", allowAnonymous: Bool = true, timeout: Double = 10) throws {
        guard let executable = Self.findMosquitto() else {
            throw LaunchError(description: "mosquitto is not installed; install it with: sudo apt-get install mosquitto (or pass --broker HOST:PORT)")
        }
        port = try requestedPort ?? Self.freePort()
        let directory = try SystemCall.makeTemporaryDirectory(prefix: "cleave-broker-")
        self.directory = directory
        let configuration = """
            listener \(port) 127.0.0.1
            allow_anonymous \(allowAnonymous)
            persistence false
            set_tcp_nodelay true
            max_queued_messages 100000
            log_dest file \(directory)/mosquitto.log
            \(extraConfiguration)
            """
        let configurationFile = "\(directory)/mosquitto.conf"
        try SystemCall.writeFileAtomically(configurationFile, Array(configuration.utf8))
        // Mosquitto started as root drops to the 'mosquitto' user, which must be able to write the log.
        try SystemCall.check("chmod \(directory)") { chmod(directory, 0o777) }
        pid = try Self.spawn(executable, ["-c", configurationFile])
        let deadline = ContinuousClock.now + .seconds(fractional: timeout)
        while !Self.accepts(port: port) {
            guard Self.isRunning(pid), ContinuousClock.now < deadline else {
                kill(pid, SIGKILL)
                _ = Self.reap(pid)
                let log = (try? SystemCall.readFile("\(directory)/mosquitto.log")).map { String(decoding: $0, as: UTF8.self) } ?? ""
                throw LaunchError(description: "mosquitto did not start on port \(port): \(log.split(separator: "\n").last ?? "no log")")
            }
            usleep(20_000)
        }
    }

    deinit { stop() }

    /// Stops the broker and waits for it to exit.
    public func stop() {
        guard Self.isRunning(pid) else { return }
        kill(pid, SIGTERM)
        for _ in 0..<250 {
            if Self.reap(pid) { return }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        _ = Self.reap(pid)
    }

    /// Asks the broker to read its password file and ACL again (SIGHUP), as
    /// `systemctl reload mosquitto` does.
    public func reload() {
        kill(pid, SIGHUP)
    }

    /// Kills the broker without a clean shutdown, as a crash would (for fault tests).
    public func kill9() {
        kill(pid, SIGKILL)
        _ = Self.reap(pid)
    }

    // MARK: - Helpers

    static func spawn(_ executable: String, _ arguments: [String]) throws -> pid_t {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // The child must not inherit blocked or ignored signals (test runners block SIGTERM).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard status == 0 else { throw LaunchError(description: "cannot start \(executable): error \(status)") }
        return pid
    }

    static func isRunning(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// Collects the exit status; true once the process is gone.
    static func reap(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        return result == pid || result == -1
    }

    static func findMosquitto() -> String? {
        let search = getenv("PATH").map { String(cString: $0) } ?? ""
        let paths = search.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin"]
        return paths.map { "\($0)/mosquitto" }.first { access($0, X_OK) == 0 }
    }

    /// A port the kernel reports free on 127.0.0.1.
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw LaunchError(description: "socket() failed: \(errno)") }
        defer { close(descriptor) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw LaunchError(description: "bind() failed: \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}
