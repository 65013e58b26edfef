import CleaveProtocol
import CleaveSupport

/// The agent's remote path: requests out through the transport, answers back to the callers
/// that wait for them, with ``RemoteRequests``'s offline queue and retries driven by one timer
/// for all requests.
///
/// The timer sleeps until the earliest retry or deadline of any waiting request (at most
/// 200 ms, so that queued requests see a reconnect promptly) and is moved earlier when a new
/// request's deadline comes first — a hedging deadline of 30 ms fires at 30 ms.
actor RemoteChannel {
    typealias Waiter = CheckedContinuation<InferenceResult, Error>

    private let transport: any MessageTransport
    private var requests: RemoteRequests<Waiter>
    private var connected = false
    private var stopped = false
    private var timer: Task<Void, Never>?
    private var timerDue = Double.infinity
    private let epoch = ContinuousClock.now

    /// Requests written to disk until resolved (`--queue-dir`), and what to do when a write fails.
    private let journal: RequestJournal?
    private let journalFailed: @Sendable (String) -> Void
    /// Ids whose journal file this channel removes when they are resolved.
    private var journaled: Set<UInt64> = []

    init(
        transport: any MessageTransport, offlineLimit: Int, retryAfter: Duration, journal: RequestJournal? = nil,
        journalFailed: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.transport = transport
        requests = RemoteRequests(offlineLimit: offlineLimit, retryAfter: retryAfter.milliseconds)
        self.journal = journal
        self.journalFailed = journalFailed
    }

    /// Removes a resolved request's journal file (not after ``stop()``: what a stopping agent
    /// leaves unanswered is sent again by the next one).
    private func resolved(_ requestID: UInt64) {
        guard journaled.remove(requestID) != nil else { return }
        journal?.remove(requestID)
    }

    /// Requests waiting for an answer, published or queued.
    var waiting: Int { requests.count }
    /// Publications repeated because an answer was late or the connection was new.
    var retries: Int { requests.retries }
    /// Answers that found no waiting request (dropped, never delivered twice).
    var droppedAnswers: Int { requests.droppedAnswers }

    private func now() -> Double { (ContinuousClock.now - epoch).milliseconds }

    /// Publishes `message` for `requestID` (or queues it while offline) and waits for its
    /// answer at most `deadline` milliseconds from now.
    /// After ``stop()``, fails at once.
    func send(_ message: MQTTMessage, requestID: UInt64, deadline: Double) async throws -> InferenceResult {
        try await send(parts: [message], alreadyPublished: 0, requestID: requestID, deadline: deadline)
    }

    /// The same for a request sent in parts, of which the first `alreadyPublished` the caller
    /// published itself as they were computed; retries send every part.
    /// With a journal, the request is on disk before it is published (`journal: false`: a
    /// request recovered from the journal, whose file the agent removes itself).
    func send(parts: [MQTTMessage], alreadyPublished: Int, requestID: UInt64, deadline: Double, journal write: Bool = true) async throws
        -> InferenceResult
    {
        guard !stopped else { throw RemoteFailure.stopped(requestID: requestID) }
        if write, let journal {
            if let failure = journal.record(requestID, messages: parts) {
                journalFailed("request \(requestID) is not in the journal (it still goes out): \(failure)")
            } else {
                journaled.insert(requestID)
            }
        }
        return try await withCheckedThrowingContinuation { continuation in
            let now = now()
            let (publication, evicted) = requests.add(
                requestID, messages: parts, alreadyPublished: connected ? alreadyPublished : 0, now: now, deadline: now + max(0, deadline),
                connected: connected, waiter: continuation)
            if let (id, entry) = evicted {
                resolved(id)
                entry.waiter.resume(throwing: RemoteFailure.offlineQueueFull(requestID: id, limit: requests.offlineLimit))
            }
            if let publication { publish(publication) }
            scheduleTimer()
        }
    }

    /// An answer arrived; false when no request waits for it (a duplicate or a late one).
    func deliver(_ result: InferenceResult) -> Bool {
        guard let entry = requests.answer(result.requestID) else { return false }
        resolved(result.requestID)
        entry.waiter.resume(returning: result)
        return true
    }

    /// The connection is up: whatever waited goes out now (returns how many).
    func connectionEstablished() -> Int {
        connected = true
        let waiting = requests.flush(now: now())
        waiting.forEach(publish)
        scheduleTimer()
        return waiting.count
    }

    /// The connection dropped: published requests wait to be sent again.
    func connectionLost() {
        connected = false
        requests.disconnected()
    }

    /// Fails every waiting request, and every later one (the agent stops).
    func stop() {
        stopped = true
        timer?.cancel()
        timer = nil
        for (id, entry) in requests.removeAll() { entry.waiter.resume(throwing: RemoteFailure.stopped(requestID: id)) }
    }

    // MARK: - The timer

    private func scheduleTimer() {
        guard let next = requests.nextEvent() else { return }
        let due = min(next, now() + 200)
        if timer != nil && timerDue <= due { return }
        timer?.cancel()
        timerDue = due
        let wait = max(0, due - now())
        timer = Task { [weak self] in
            try? await Task.sleep(for: .microseconds(Int(wait * 1000)))
            guard !Task.isCancelled else { return }
            await self?.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        timerDue = .infinity
        let current = now()
        let (retries, expired) = requests.serviceAll(now: current, connected: connected)
        retries.forEach(publish)
        for (id, entry) in expired {
            resolved(id)
            entry.waiter.resume(throwing: RemoteFailure.noAnswer(requestID: id, afterMilliseconds: current - entry.added))
        }
        scheduleTimer()
    }

    private func publish(_ publication: RemoteRequests<Waiter>.Publication) {
        do {
            for message in publication.messages { try transport.publish(message) }
        } catch {
            requests.unsent(publication.requestID)
        }
    }
}
