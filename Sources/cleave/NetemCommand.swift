import ArgumentParser
import CleaveNetem
import CleaveSupport
import Dispatch
import Foundation

struct NetemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netem",
        abstract: "Run TCP proxies that degrade the network between agents and the broker.",
        discussion: """
            Each proxy listens on a port and joins every connection to its upstream (normally the \
            broker), shaping both directions: rate (token bucket, --burst bytes above it), one-way \
            latency plus uniform jitter (order is kept, as TCP delivers in order), packet loss as \
            TCP sees it (each lost packet costs --retransmit-delay before its bytes move on; \
            --loss for independent losses, --burst-loss for Gilbert–Elliott bursts) or a Mahimahi \
            delivery trace (--trace: one millisecond timestamp per line, each a 1500-byte \
            opportunity, repeating). Everything random is drawn from --seed, so a run repeats.

            Give one proxy with --listen and --upstream, or several with --proxy \
            NAME,LISTEN,UPSTREAM (one per agent). With --scenario FILE the proxies follow the \
            file's timeline (a proxy uses the timeline named like it, else 'default') and the \
            command ends after the scenario's duration; without it, it runs until interrupted.

            While running, a control interface on --control (loopback by default) changes \
            conditions live and exports counters: GET /metrics (Prometheus text), GET /proxies, \
            POST /proxies/NAME/conditions?rate=1mbit&latency=50ms&loss=1%&direction=uplink, \
            POST /proxies/NAME/down?outage=hold|refuse, POST /proxies/NAME/up, POST \
            /proxies/NAME/reset. Example: curl -X POST 'localhost:9190/proxies/a1/down?outage=hold'.
            """)

    @Option(help: "Where a single proxy listens (HOST:PORT or PORT).") var listen: String?
    @Option(help: "Where a single proxy connects (the broker).") var upstream: String?
    @Option(help: "A named proxy: NAME,LISTEN,UPSTREAM (repeatable).") var proxy: [String] = []
    @Option(help: "Rate of both directions, e.g. 64kbit, 2mbit.") var rate: String?
    @Option(help: "Rate client → upstream.") var uplinkRate: String?
    @Option(help: "Rate upstream → client.") var downlinkRate: String?
    @Option(help: "Bytes the token bucket may send above the rate.") var burst = 0
    @Option(help: "One-way latency, e.g. 40ms.") var latency = "0ms"
    @Option(help: "Uniform extra delay 0…jitter.") var jitter = "0ms"
    @Option(help: "Independent packet loss, e.g. 1%.") var loss = "0%"
    @Option(help: "Gilbert–Elliott loss: ENTER_BAD,LEAVE_BAD,LOSS_GOOD,LOSS_BAD (probabilities).") var burstLoss: String?
    @Option(help: "Delay a lost packet costs.") var retransmitDelay = "200ms"
    @Option(help: "A Mahimahi delivery trace for both directions.") var trace: String?
    @Option(help: "A scenario file (YAML) to play.") var scenario: String?
    @Option(help: "Seed of every random draw.") var seed: UInt64 = 1
    @Option(help: "Control interface HOST:PORT, or 'none'.") var control = "127.0.0.1:9190"

    func run() throws {
        var specs: [(String, Endpoint, Endpoint)] = []
        if let listen, let upstream {
            specs.append(("proxy", try Endpoint(parsing: listen), try Endpoint(parsing: upstream)))
        } else if listen != nil || upstream != nil {
            throw ValidationError("--listen and --upstream go together")
        }
        for text in proxy {
            let parts = text.split(separator: ",").map(String.init)
            guard parts.count == 3 else { throw ValidationError("--proxy '\(text)' should be NAME,LISTEN,UPSTREAM") }
            specs.append((parts[0], try Endpoint(parsing: parts[1]), try Endpoint(parsing: parts[2])))
        }
        guard !specs.isEmpty else { throw ValidationError("give --listen and --upstream, or one --proxy per agent") }

        let (uplink, downlink) = try conditions()
        let traceFile = try trace.map { path -> DeliveryTrace in
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            return try DeliveryTrace(text: String(decoding: data, as: UTF8.self), name: path)
        }
        let loaded = try scenario.map(Scenario.load)
        let proxies = try specs.enumerated().map { index, spec in
            try NetemProxy(
                name: spec.0, listen: spec.1, upstream: spec.2, uplink: uplink, downlink: downlink,
                seed: (loaded?.seed ?? seed) &+ UInt64(index) &* 1_000_003)
        }
        for proxy in proxies where traceFile != nil {
            try proxy.setConditions(uplink: uplink, downlink: downlink, uplinkTrace: traceFile, downlinkTrace: traceFile)
        }
        let server = control == "none" ? nil : try ControlServer(endpoint: try Endpoint(parsing: control), proxies: proxies)
        for proxy in proxies {
            let (up, down) = proxy.conditions
            log(
                "\(proxy.name): \(proxy.listen) -> \(proxy.upstream): \(ScenarioPlayer.describe(uplink: up, downlink: down, uplinkTrace: traceFile, downlinkTrace: traceFile))"
            )
        }
        if let server { log("control: http://\(server.endpoint)/proxies, /metrics") }

        let report: @Sendable () -> Void = {
            for proxy in proxies { print(proxy.metrics.text(proxy: proxy.name), terminator: "") }
            fflush(nil)
        }
        let signals = onInterrupt(report)
        if let loaded {
            log("scenario '\(loaded.name)': \(Int(loaded.duration / 1000)) s")
            try ScenarioPlayer(scenario: loaded, proxies: proxies).play(log: log)
        } else {
            while true { Thread.sleep(forTimeInterval: 3600) }
        }
        withExtendedLifetime(signals) {}
        report()
        for proxy in proxies { proxy.stop() }
        server?.stop()
    }

    private func conditions() throws -> (LinkConditions, LinkConditions) {
        var base = LinkConditions()
        base.latency = try LinkConditions.parseDuration(latency)
        base.jitter = try LinkConditions.parseDuration(jitter)
        base.burstBytes = burst
        base.retransmitDelay = try LinkConditions.parseDuration(retransmitDelay)
        let p = try LinkConditions.parseProbability(loss)
        base.loss = p == 0 ? .none : .random(p)
        if let burstLoss {
            let values = try burstLoss.split(separator: ",").map { try LinkConditions.parseProbability(String($0)) }
            guard values.count == 4 else { throw ValidationError("--burst-loss needs four probabilities: ENTER_BAD,LEAVE_BAD,LOSS_GOOD,LOSS_BAD") }
            base.loss = .gilbertElliott(enterBad: values[0], leaveBad: values[1], lossGood: values[2], lossBad: values[3])
        }
        var uplink = base
        var downlink = base
        if let rate { (uplink.rate, downlink.rate) = (try LinkConditions.parseRate(rate), try LinkConditions.parseRate(rate)) }
        if let uplinkRate { uplink.rate = try LinkConditions.parseRate(uplinkRate) }
        if let downlinkRate { downlink.rate = try LinkConditions.parseRate(downlinkRate) }
        return (uplink, downlink)
    }

    private func log(_ line: String) {
        FileHandle.standardError.write(Data("netem: \(line)\n".utf8))
    }
}
