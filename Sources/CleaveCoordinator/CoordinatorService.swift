import ServiceLifecycle

/// The coordinator as a swift-service-lifecycle `Service`.
///
/// `run()` starts serving and prints the counters every `reportInterval`; on a graceful
/// shutdown (SIGTERM, SIGINT) it leaves the shared subscription, so that the broker hands new
/// frames to the other coordinators, finishes the frames it is computing (at most
/// `drainTimeout`) and disconnects.
public struct CoordinatorService: Service {
    public let coordinator: Coordinator
    public let reportInterval: Duration
    public let drainTimeout: Duration
    public let report: @Sendable (CoordinatorStatistics) -> Void

    public init(
        coordinator: Coordinator, reportInterval: Duration = .seconds(10), drainTimeout: Duration = .seconds(4),
        report: @escaping @Sendable (CoordinatorStatistics) -> Void
    ) {
        self.coordinator = coordinator
        self.reportInterval = reportInterval
        self.drainTimeout = drainTimeout
        self.report = report
    }

    public func run() async throws {
        try await coordinator.start()
        let coordinator = self.coordinator
        let interval = reportInterval
        let report = self.report
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if !Task.isCancelled { report(await coordinator.statistics) }
            }
        }
        await coordinator.drain(timeout: drainTimeout)
        await coordinator.stop()
        // The last counters, so that the log says what the process did in all.
        report(await coordinator.statistics)
    }
}
