import CleaveFleet
import CleaveMQTT
import CleaveSupport
import Foundation
import Testing

/// A board whose clock is set back one hour while it serves (an NTP correction, an RTC-less
/// board restored from fake-hwclock): a real `cleave agent` process whose wall clock reads an
/// hour early from 3 s into the run, over the deployed configuration (TLS with client
/// certificates, passwords, ACL, signed control, a broker with persistence), split only with
/// no local fallback, so that every request must be answered by the coordinator. After the
/// jump the broker is killed and restarted, so the agent reconnects — TLS checks certificate
/// dates against that clock — and sends again what was in flight.
///
/// The clock is moved by a small preloaded library compiled here (`clock_gettime` on the
/// real-time clocks, `gettimeofday` and `time` read the shift from a file): only reads of the
/// wall clock change, as when the system clock is set; sleeps and timers stay on the kernel's
/// clocks. (libfaketime was tried first: its wrappers of timers and sleeps stalled the agent's
/// timers after a reconnect even with a fixed offset, which a real clock change does not do,
/// and its start-up moves the environment where Swift's runtime looks for the arguments.)
@Suite(.serialized) struct AgentClockTests {
    static let repository = SplitServingTests.repository

    static let shimSource = """
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/time.h>
        #include <time.h>

        typedef int (*clock_function)(clockid_t, struct timespec *);

        static clock_function real_clock(void) {
            static clock_function real = 0;
            if (!real) real = (clock_function)dlsym(RTLD_NEXT, "clock_gettime");
            return real;
        }

        /* Seconds to add to the wall clock: the file's number, read again once a second. */
        static long shift(void) {
            static long seconds = 0;
            static time_t checked = -1;
            struct timespec now;
            real_clock()(CLOCK_MONOTONIC, &now);
            if (now.tv_sec != checked) {
                checked = now.tv_sec;
                const char *path = getenv("CLEAVE_CLOCK_SHIFT_FILE");
                FILE *file = path ? fopen(path, "r") : 0;
                if (file) {
                    long value = 0;
                    if (fscanf(file, "%ld", &value) == 1) seconds = value;
                    fclose(file);
                }
            }
            return seconds;
        }

        int clock_gettime(clockid_t id, struct timespec *ts) {
            int result = real_clock()(id, ts);
            if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += shift();
            return result;
        }

        int gettimeofday(struct timeval *tv, void *tz) {
            struct timespec now;
            int result = clock_gettime(CLOCK_REALTIME, &now);
            if (result == 0 && tv) {
                tv->tv_sec = now.tv_sec;
                tv->tv_usec = now.tv_nsec / 1000;
            }
            return result;
        }

        time_t time(time_t *out) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (out) *out = now.tv_sec;
            return now.tv_sec;
        }
        """

    /// Compiles the shim into `folder` with the system's C compiler or the clang that comes with
    /// the Swift toolchain; nil when there is none.
    static func buildShim(in folder: String) throws -> String? {
        let source = "\(folder)/clockshift.c"
        let library = "\(folder)/libclockshift.so"
        try SystemCall.writeFileAtomically(source, Array(shimSource.utf8))
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let compilers = ["/usr/bin/cc", "/usr/bin/gcc"] + path.map { "\($0)/clang" }
        for compiler in compilers where SystemCall.isReadable(compiler) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: compiler)
            process.arguments = ["-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"]
            try process.run()
            process.waitUntilExit()
            if process.terminationStatus == 0 { return library }
        }
        return nil
    }

    static func text(_ url: URL) -> String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }

    @Test func aClockSetBackAnHourLosesNothingAndComputesNothingTwice() async throws {
        let folder = try SystemCall.makeTemporaryDirectory(prefix: "cleave-clock-")
        chmod(folder, 0o777)
        var fleet = try FleetAuthority.create(directory: "\(folder)/fleet", hosts: ["127.0.0.1"])
        chmod(fleet.directory, 0o755)
        _ = try fleet.enroll("clock-c", role: .coordinator)
        _ = try fleet.enroll("clock-a")
        try SystemCall.makeDirectories("\(folder)/persistence")
        chmod("\(folder)/persistence", 0o777)
        let settings =
            fleet.accessSettings + "\n" + fleet.listenerSettings
            + "\npersistence true\npersistence_location \(folder)/persistence/\nautosave_interval 60"
        var broker = try LocalBroker(extraConfiguration: settings, allowAnonymous: false)
        let address = "127.0.0.1:\(broker.port)"
        let requestLog = "\(folder)/computed.log"
        let (coordinator, _) = try GracefulShutdownTests.launch(
            "cleave",
            [
                "coordinator", "--broker", address, "--model", SplitServingTests.modelFolder, "--id", "clock-c", "--member",
                fleet.memberDirectory("clock-c"), "--request-log", requestLog,
            ])
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }

        // The agent's wall clock: the real one plus the file's seconds.
        let shift = "\(folder)/clock-shift"
        try SystemCall.writeFileAtomically(shift, Array("0\n".utf8))
        let shim = try #require(try Self.buildShim(in: folder), "no C compiler (cc, gcc or clang) to build the clock shim")
        let samples = 400
        let (agent, agentOutput) = try GracefulShutdownTests.launch(
            "cleave",
            [
                "agent", "--broker", address, "--member", fleet.memberDirectory("clock-a"), "--profile", "\(Self.repository)/devices/generic.yaml",
                "--mode", "split", "--no-fallback", "--timeout", "30", "--samples", "\(samples)", "--rate", "20", "--in-flight", "64",
                "--model-cache", "none",
            ],
            environment: ["LD_PRELOAD": shim, "CLEAVE_CLOCK_SHIFT_FILE": shift])
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        let start = ContinuousClock.now
        while !Self.text(agentOutput).contains("models verified") && ContinuousClock.now - start < .seconds(60) {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .seconds(3))
        try SystemCall.writeFileAtomically(shift, Array("-3600\n".utf8))
        try await Task.sleep(for: .seconds(3))
        broker.kill9()
        try await Task.sleep(for: .seconds(2))
        broker = try LocalBroker(port: broker.port, extraConfiguration: settings, allowAnonymous: false)
        while agent.isRunning && ContinuousClock.now - start < .seconds(90) { try await Task.sleep(for: .milliseconds(50)) }
        if agent.isRunning {
            kill(agent.processIdentifier, SIGKILL)
            agent.waitUntilExit()
        }
        let output = Self.text(agentOutput)
        _ = await GracefulShutdownTests.terminate(coordinator)

        let row = output.split(separator: "\n").last { $0.hasPrefix("split ") && $0.contains("%") }
        let fields = row?.split(separator: " ") ?? []
        let answered = fields.count > 2 ? Int(fields[1]).map { $0 - (Int(fields[2]) ?? $0) } : nil
        let (computed, twice) = RequestLogs.tally([requestLog])
        print(
            "fault suite | agent clock set back 1 h at 3 s, broker kill -9 at 6 s, restarted at 8 s | sent \(samples) | remote \(answered ?? -1) "
                + "| local 0 | lost \(samples - (answered ?? 0)) | computed twice \(twice) of \(computed)")
        // The shift took effect: the agent's log stamps (its own wall clock) went back an hour.
        let stamps = output.split(separator: "\n").compactMap { ISO8601DateFormatter().date(from: String($0.prefix(24))) }
        #expect(stamps.contains { Date().timeIntervalSince($0) > 3000 }, "the agent's clock was set back: \(output.prefix(1200))")
        #expect(output.contains("no broker connection"), "the agent saw the broker go (the timeline ran while it served): \(output.prefix(1200))")
        #expect(agent.terminationStatus == 0, "\(output.suffix(1500))")
        #expect(answered == samples, "every request answered by the coordinator: \(row ?? "no summary") \(output.suffix(1500))")
        #expect(twice == 0, "no request computed twice (\(twice) of \(computed))")
    }
}
