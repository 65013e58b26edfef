import CleaveDatasets
import CleaveProtocol
import ServiceLifecycle

/// The agent as a swift-service-lifecycle `Service`, for a `ServiceGroup` that turns SIGTERM
/// and SIGINT into a graceful shutdown.
///
/// `run()` connects, waits for the assignment and models, then serves `samples` inputs from
/// the source (0: stays online, answering nothing itself, until shut down). On a graceful
/// shutdown it sends no new request, waits for those in flight (at most `drainTimeout`),
/// publishes its offline state and returns, so the process exits 0; a shutdown before the
/// models are in stops the wait for them at once.
public struct AgentService: Service {
    public let agent: Agent
    public let source: InputSource?
    public let samples: Int
    public let mode: InferenceMode?
    public let rate: Double
    /// Requests in flight at once (1: each waits for the one before).
    public let inFlight: Int
    public let drainTimeout: Duration

    public init(
        agent: Agent, source: InputSource?, samples: Int, mode: InferenceMode?, rate: Double, inFlight: Int = 1, drainTimeout: Duration = .seconds(4)
    ) {
        self.inFlight = inFlight
        self.agent = agent
        self.source = source
        self.samples = samples
        self.mode = mode
        self.rate = rate
        self.drainTimeout = drainTimeout
    }

    public func run() async throws {
        // A shutdown while the agent connects or waits for its models ends the wait at once.
        do {
            try await cancelWhenGracefulShutdown {
                try await agent.start()
                try await agent.waitUntilReady()
            }
        } catch is CancellationError {
            await agent.stop()
            return
        }
        if let source, samples > 0 {
            try await agent.serveAndReport(source, samples: samples, mode: mode, rate: rate, inFlight: inFlight) { Task.isShuttingDownGracefully }
        } else {
            try? await gracefulShutdown()
        }
        await agent.drain(timeout: drainTimeout)
        await agent.stop()
    }
}
