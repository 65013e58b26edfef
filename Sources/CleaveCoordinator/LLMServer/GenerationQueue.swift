import CleaveLLM
import Foundation
import Synchronization

/// One completion asked of the model: what to generate, and where the text goes.
final class GenerationJob: Sendable {
    enum Event: Sendable {
        /// How many tokens the prompt has (sent before any text).
        case started(promptTokens: Int)
        case text(String)
        /// Generation ended: why ("stop" or "length", as OpenAI names it) and how many tokens.
        case finished(reason: String, completionTokens: Int)
        /// The request cannot run (its reason, for a 400 answer).
        case refused(String)
    }

    let prompt: String
    let maxTokens: Int
    let sampling: SamplingParameters
    /// Stops generation when set (the client went away).
    let cancelled = Atomic<Bool>(false)
    let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation

    init(prompt: String, maxTokens: Int, sampling: SamplingParameters) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    func yield(_ event: Event) { continuation.yield(event) }
    func finish() { continuation.finish() }
    func cancel() { cancelled.store(true, ordering: .relaxed) }
}

/// Runs completions one at a time, in the order they arrived, on a thread of its own: the
/// model holds one context and is not shared between threads.
///
/// Every request waits its turn (first come, first served: no client can starve another);
/// a request whose client has gone is skipped, and one whose client goes while it runs
/// stops at the next token.
final class GenerationQueue: Sendable {
    private let state = Mutex<(jobs: [GenerationJob], stopped: Bool)>(([], false))
    private let wakeUp = DispatchSemaphore(value: 0)
    /// Tokens of the model's context.
    let capacity: Int
    let log: @Sendable (String) -> Void

    /// Starts the thread that owns `generator`.
    init(generator: TextGenerator, log: @escaping @Sendable (String) -> Void) {
        capacity = generator.model.capacity
        self.log = log
        let owner = UncheckedGenerator(generator)
        Thread.detachNewThread { [self] in run(owner.generator) }
    }

    /// Queues `job`; its events arrive on the job's stream.
    func submit(_ job: GenerationJob) {
        state.withLock { $0.jobs.append(job) }
        wakeUp.signal()
    }

    /// Requests waiting (not counting the one running).
    var waiting: Int { state.withLock { $0.jobs.count } }

    func stop() {
        state.withLock { $0.stopped = true }
        wakeUp.signal()
    }

    private func run(_ generator: TextGenerator) {
        while true {
            wakeUp.wait()
            let next: GenerationJob? = state.withLock { state in
                state.stopped || state.jobs.isEmpty ? nil : state.jobs.removeFirst()
            }
            if state.withLock({ $0.stopped }) { return }
            guard let job = next else { continue }
            generate(job, generator)
        }
    }

    private func generate(_ job: GenerationJob, _ generator: TextGenerator) {
        defer { job.finish() }
        guard !job.cancelled.load(ordering: .relaxed) else { return }
        let ids = generator.tokenizer.encode(job.prompt)
        guard !ids.isEmpty else { return job.yield(.refused("the prompt is empty")) }
        guard ids.count + job.maxTokens <= capacity else {
            return job.yield(
                .refused(
                    "the prompt has \(ids.count) tokens and max_tokens is \(job.maxTokens): \(ids.count + job.maxTokens) positions, "
                        + "the context holds \(capacity)"))
        }
        job.yield(.started(promptTokens: ids.count))
        do {
            var stoppedByClient = false
            let summary = try generator.generate(prompt: ids, maxTokens: job.maxTokens, sampling: job.sampling) { piece in
                job.yield(.text(piece))
                stoppedByClient = job.cancelled.load(ordering: .relaxed)
                return !stoppedByClient
            }
            if stoppedByClient { log("client went away after \(summary.generated.count) tokens; generation stopped") }
            job.yield(.finished(reason: summary.reason == "stop token" ? "stop" : "length", completionTokens: summary.generated.count))
        } catch {
            job.yield(.refused("\(error)"))
        }
    }
}

/// Hands the generator to the thread that alone uses it.
private struct UncheckedGenerator: @unchecked Sendable {
    let generator: TextGenerator
    init(_ generator: TextGenerator) { self.generator = generator }
}
