import COpenBLAS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Splits loops across a fixed number of threads.
///
/// A pool of more than one thread uses the process's ``WorkerTeam`` of that size
/// (``WorkerTeam/shared(threads:)``): persistent threads that
/// start a loop at once (an inference is dozens of loops of well under a
/// millisecond; waking Dispatch workers for each cost more than the work). With
/// one thread a loop runs inline. The ONNX executor also splits matrix products
/// across the team and keeps OpenBLAS on one thread (``configureBLASForOwnThreads()``),
/// so that the two never compete for the cores; training, whose products are large,
/// lets OpenBLAS use ``threads`` threads instead (``configureBLAS()``).
public struct ThreadPool: Sendable {
    /// Number of threads one loop may use (at least 1).
    public let threads: Int
    /// The pool's threads (nil for one thread).
    let team: WorkerTeam?

    /// A pool that uses `threads` threads; `nil` means one per core.
    public init(threads: Int? = nil) {
        self.threads = max(1, threads ?? ThreadPool.coreCount)
        team = self.threads > 1 ? WorkerTeam.shared(threads: self.threads) : nil
    }

    /// Sets OpenBLAS's process-wide thread count to ``threads``.
    public func configureBLAS() {
        openblas_set_num_threads(Int32(threads))
    }

    /// Sets OpenBLAS to one thread: products are split across this pool's threads instead.
    public func configureBLASForOwnThreads() {
        openblas_set_num_threads(1)
    }

    /// The number of cores Dispatch sees.
    public static var coreCount: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Runs `body` over `0..<count` split into at most ``threads`` contiguous ranges.
    ///
    /// `body` must be safe to run concurrently on disjoint ranges.
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, minimumChunk)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        team!.parallelFor(count, minimumChunk: minimumChunk, body)
    }
}
