import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A fixed team of threads for many short parallel loops in a row.
///
/// An LLM decode step is hundreds of matrix–vector products of a few tens of
/// microseconds each; waking Dispatch workers for every one costs more than the
/// work. The team's threads live as long as the team: after a loop they spin on
/// an atomic counter (first tightly, then yielding the core to other threads)
/// so that the next loop starts at once, and sleep on a condition variable when
/// no work has come for a while. The calling thread takes part as worker 0.
///
/// `@unchecked Sendable`: the job pointer is written only by ``run(_:)`` while
/// every worker is idle, and read by workers only between the generation bump
/// (release) that publishes it and their decrement of `pending` (release) that
/// the caller waits for (acquire).
public final class WorkerTeam: @unchecked Sendable {
    /// Threads taking part in a loop, the caller included.
    public let threads: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var job: ((Int) -> Void)?
    private var workers: [pthread_t] = []
    private let running = Mutex<Void>(())

    /// Spins of an idle worker before it sleeps.
    private static let spinLimit = 1 << 16
    /// Spins before a waiting thread starts yielding its core: when the machine is busy, the
    /// thread it waits for may be the one that needs the core.
    private static let spinsBeforeYield = 1 << 10

    private static let teams = Mutex<[Int: WorkerTeam]>([:])

    /// The process's team of `threads` threads, started on first use and shared by every
    /// ``ThreadPool`` of that size (sessions come and go; their threads need not).
    /// Callers that overlap take turns loop by loop.
    public static func shared(threads: Int) -> WorkerTeam {
        teams.withLock { teams in
            if let team = teams[threads] { return team }
            let team = WorkerTeam(threads: threads)
            teams[threads] = team
            return team
        }
    }

    /// A team of `threads` threads (default: one per core); `threads - 1` are started.
    public init(threads: Int? = nil) {
        self.threads = max(1, threads ?? ThreadPool.coreCount)
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for index in 1..<self.threads {
            let context = Unmanaged.passRetained(WorkerContext(team: self, index: index)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(
                &thread, nil,
                { raw in
                    let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                    context.team.takeUnretainedValue().work(index: context.index)
                    return nil
                }, context)
            precondition(status == 0, "cannot start a worker thread: error \(status)")
            workers.append(thread)
        }
    }

    deinit {
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(mutex)
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
        for thread in workers { pthread_join(thread, nil) }
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `body(i)` for every worker index `i` in `0..<threads` at once and returns when all
    /// are done. Loops from different callers run one after another.
    public func run(_ body: (Int) -> Void) {
        if threads == 1 {
            body(0)
            return
        }
        running.withLock { _ in
            withoutActuallyEscaping(body) { body in
                job = body
                pending.store(threads - 1, ordering: .relaxed)
                pthread_mutex_lock(mutex)
                generation.add(1, ordering: .releasing)
                pthread_cond_broadcast(condition)
                pthread_mutex_unlock(mutex)
                body(0)
                var spins = 0
                while pending.load(ordering: .acquiring) > 0 {
                    spins += 1
                    if spins > Self.spinsBeforeYield { sched_yield() }
                }
                job = nil
            }
        }
    }

    /// Runs `body` over `0..<count` split into at most ``threads`` contiguous ranges of at least
    /// `minimumChunk` items.
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, minimumChunk)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        run { chunk in
            guard chunk < chunks else { return }
            let start = count * chunk / chunks
            let end = count * (chunk + 1) / chunks
            if start < end { body(start..<end) }
        }
    }

    /// Runs `body` over `0..<count` in chunks of `chunk` items that threads take in turn from a
    /// shared counter, so that a thread slowed down by anything else does not hold the others up.
    public func parallelFor(_ count: Int, dynamicChunk chunk: Int, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunk = max(1, chunk)
        if threads == 1 || count <= chunk {
            body(0..<count)
            return
        }
        let next = Atomic<Int>(0)
        run { _ in
            while true {
                let start = next.add(chunk, ordering: .relaxed).oldValue
                guard start < count else { return }
                body(start..<min(start + chunk, count))
            }
        }
    }

    private func work(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spinsBeforeYield { continue }
                if spins < Self.spinLimit {
                    sched_yield()
                    continue
                }
                pthread_mutex_lock(mutex)
                while generation.load(ordering: .acquiring) == seen { pthread_cond_wait(condition, mutex) }
                pthread_mutex_unlock(mutex)
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            job?(index)
            pending.subtract(1, ordering: .releasing)
        }
    }
}

/// What a worker thread needs: its team (unretained: the team joins its threads in `deinit`)
/// and its index.
private final class WorkerContext: Sendable {
    let team: Unmanaged<WorkerTeam>
    let index: Int

    init(team: WorkerTeam, index: Int) {
        self.team = Unmanaged.passUnretained(team)
        self.index = index
    }
}
