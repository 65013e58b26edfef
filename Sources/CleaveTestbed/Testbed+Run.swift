import Logging
import ServiceLifecycle
import Synchronization

extension Testbed {
    /// Runs `work` on this testbed under a `ServiceGroup` that handles SIGINT and SIGTERM, then
    /// stops everything the testbed started.
    ///
    /// On a signal, `work`'s task is cancelled and the testbed stops at once, agents first, so
    /// that requests waiting for an answer end instead of running to their timeout; `run` then
    /// throws ``TestbedError/interrupted``. An error thrown by `work` is rethrown after the stop.
    public nonisolated func run<T: Sendable>(logger: Logger, _ work: @Sendable @escaping (Testbed) async throws -> T) async throws -> T {
        let outcome = WorkOutcome<T>()
        let service = WorkService { [self] in
            let result: Result<T, any Error>
            do {
                result = .success(
                    try await withGracefulShutdownHandler {
                        try await cancelWhenGracefulShutdown { try await work(self) }
                    } onGracefulShutdown: {
                        outcome.interrupt()
                        Task { await self.stop() }
                    })
            } catch {
                result = .failure(error)
            }
            outcome.finish(result)
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await stop()
        return try outcome.result()
    }
}

/// The work of ``Testbed/run(logger:_:)`` as a service of its group.
private struct WorkService: Service {
    let body: @Sendable () async -> Void
    func run() async { await body() }
}

/// What the work returned, and whether a signal cut it short.
private final class WorkOutcome<T: Sendable>: Sendable {
    private let state = Mutex<(result: Result<T, any Error>?, interrupted: Bool)>((nil, false))

    func interrupt() { state.withLock { $0.interrupted = true } }
    func finish(_ result: Result<T, any Error>) { state.withLock { $0.result = result } }

    func result() throws -> T {
        let (result, interrupted) = state.withLock { ($0.result, $0.interrupted) }
        // The work can see the cancellation before this handler runs: a CancellationError is
        // the signal too.
        guard !interrupted, let result else { throw TestbedError.interrupted }
        do {
            return try result.get()
        } catch is CancellationError {
            throw TestbedError.interrupted
        }
    }
}
