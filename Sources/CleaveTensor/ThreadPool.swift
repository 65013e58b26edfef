import COpenBLAS
import Dispatch

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Splits loops across a fixed number of threads.
///
/// Work runs on Dispatch's worker threads, never more than ``threads`` at a
/// time for one loop; with one thread the loop runs inline. OpenBLAS keeps one
/// process-wide thread count; ``configureBLAS()`` sets it to this pool's, and the
/// executor calls it at the start of every run, so that GEMM and our loops use
/// the same number of cores.
public struct ThreadPool: Sendable {
    /// Number of threads one loop may use (at least 1).
    public let threads: Int

    /// A pool that uses `threads` threads; `nil` means one per core.
    public init(threads: Int? = nil) {
        self.threads = max(1, threads ?? ThreadPool.coreCount)
    }

    /// Sets OpenBLAS's process-wide thread count to ``threads``.
    public func configureBLAS() {
        openblas_set_num_threads(Int32(threads))
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
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = count * chunk / chunks
                let end = count * (chunk + 1) / chunks
                if start < end { box.value(start..<end) }
            }
        }
    }
}

/// Carries a non-`Sendable` closure into `concurrentPerform`, whose iterations
/// touch disjoint data by construction.
private struct UnsafeSendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
