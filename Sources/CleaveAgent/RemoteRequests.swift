import CleaveProtocol

/// Why a remote request ended without an answer from a coordinator.
public enum RemoteFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No answer before the request's deadline (the hedging delay or the request timeout).
    case noAnswer(requestID: UInt64, afterMilliseconds: Double)
    /// The broker was unreachable and the offline queue was full; this was its oldest request.
    case offlineQueueFull(requestID: UInt64, limit: Int)
    /// The agent stopped while the request waited.
    case stopped(requestID: UInt64)

    public var description: String {
        switch self {
        case .noAnswer(let id, let milliseconds): "no answer to request \(id) within \(Int(milliseconds.rounded())) ms"
        case .offlineQueueFull(let id, let limit): "request \(id) left the offline queue: it was full (\(limit) requests)"
        case .stopped(let id): "request \(id) dropped: agent stopped"
        }
    }
}

/// The agent's table of remote requests that have no answer yet: what makes a request
/// survive a broker restart, a crashed coordinator or a link that comes and goes.
///
/// Every request keeps its MQTT message. It is published at once when the agent is
/// connected, else it waits in the offline queue (at most `offlineLimit` requests; when a new
/// one arrives at a full queue, the oldest waiting one fails with
/// ``RemoteFailure/offlineQueueFull(requestID:limit:)``, so the caller can compute it
/// locally: the queue never grows without bound and no request is dropped silently).
/// A published request without an answer is published again after `retryAfter`
/// milliseconds, doubling up to 8 times that, and at once after every reconnect; the
/// coordinator answers a repeated request id from its result cache, so a retry never
/// computes twice. The first answer resolves the request; later copies find nothing and
/// are counted, never delivered. `Waiter` is what resumes the caller (a continuation in the
/// agent, a plain value in tests).
struct RemoteRequests<Waiter> {
    struct Entry {
        /// What the request publishes: one frame, or its parts in order (every retry sends all).
        var messages: [MQTTMessage]
        /// When it was added, milliseconds on the agent's clock.
        var added: Double
        /// Milliseconds on the agent's clock.
        var deadline: Double
        var lastSent: Double?
        var attempts = 0
        var waiter: Waiter
    }

    /// A request to publish now: first time, or again.
    struct Publication {
        var requestID: UInt64
        var messages: [MQTTMessage]
        var retry: Bool
    }

    let offlineLimit: Int
    let retryAfter: Double
    private(set) var entries: [UInt64: Entry] = [:]
    /// Requests never published, oldest first.
    private(set) var queued: [UInt64] = []
    /// Answers that arrived for a request no longer waiting (a retry's second answer, or an
    /// answer after the deadline).
    private(set) var droppedAnswers = 0
    private(set) var retries = 0

    init(offlineLimit: Int, retryAfter: Double) {
        self.offlineLimit = offlineLimit
        self.retryAfter = retryAfter
    }

    /// Requests waiting for an answer, published or queued.
    var count: Int { entries.count }

    /// Adds a request; returns whether to publish it now and the request that overflowed the
    /// offline queue, if any (already removed: resume it with the failure).
    mutating func add(
        _ requestID: UInt64, message: MQTTMessage, now: Double, deadline: Double, connected: Bool,
        waiter: Waiter
    ) -> (publish: Publication?, evicted: (UInt64, Entry)?) {
        add(requestID, messages: [message], alreadyPublished: 0, now: now, deadline: deadline, connected: connected, waiter: waiter)
    }

    /// The same for a request sent in parts, of which the first `alreadyPublished` went out as
    /// they were computed (connected): the publication holds the rest; a retry or a reconnect
    /// sends them all.
    mutating func add(
        _ requestID: UInt64, messages: [MQTTMessage], alreadyPublished: Int, now: Double, deadline: Double, connected: Bool,
        waiter: Waiter
    ) -> (publish: Publication?, evicted: (UInt64, Entry)?) {
        var entry = Entry(messages: messages, added: now, deadline: deadline, waiter: waiter)
        if connected {
            entry.lastSent = now
            entry.attempts = 1
            entries[requestID] = entry
            return (Publication(requestID: requestID, messages: Array(messages.dropFirst(alreadyPublished)), retry: false), nil)
        }
        var evicted: (UInt64, Entry)?
        if queued.count >= offlineLimit, let oldest = queued.first {
            queued.removeFirst()
            evicted = entries.removeValue(forKey: oldest).map { (oldest, $0) }
        }
        entries[requestID] = entry
        queued.append(requestID)
        return (nil, evicted)
    }

    /// Publishing `requestID` failed at once (the connection dropped under it): it waits in the
    /// offline queue instead.
    mutating func unsent(_ requestID: UInt64) {
        guard entries[requestID] != nil, !queued.contains(requestID) else { return }
        entries[requestID]?.lastSent = nil
        queued.append(requestID)
    }

    /// The connection dropped: every published request waits in the offline queue again, to be
    /// published once more by the next ``flush(now:)``.
    mutating func disconnected() {
        let published = entries.filter { $0.value.lastSent != nil }.map(\.key).sorted()
        for id in published { entries[id]!.lastSent = nil }
        queued += published
    }

    /// The answer for `requestID`, if the request is still waiting.
    mutating func answer(_ requestID: UInt64) -> Entry? {
        guard let entry = entries.removeValue(forKey: requestID) else {
            droppedAnswers += 1
            return nil
        }
        queued.removeAll { $0 == requestID }
        return entry
    }

    /// Removes every request (the agent stops).
    mutating func removeAll() -> [(UInt64, Entry)] {
        defer {
            entries = [:]
            queued = []
        }
        return entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Removes a request (deadline passed, or the agent stops).
    mutating func remove(_ requestID: UInt64) -> Entry? {
        queued.removeAll { $0 == requestID }
        return entries.removeValue(forKey: requestID)
    }

    /// Everything to publish after a (re)connect: the offline queue, oldest first (requests that
    /// were in flight when the connection dropped are in it again, see ``disconnected()``).
    mutating func flush(now: Double) -> [Publication] {
        let ids = queued
        queued = []
        return ids.compactMap { id in
            guard entries[id] != nil else { return nil }
            let retry = entries[id]!.attempts > 0
            if retry { retries += 1 }
            entries[id]!.lastSent = now
            entries[id]!.attempts += 1
            return Publication(requestID: id, messages: entries[id]!.messages, retry: retry)
        }
    }

    /// What is due for `requestID` at `now`: its failure when the deadline has passed (the
    /// request is removed), or a retry when it was published, is unanswered for its retry
    /// interval and the agent is connected.
    mutating func service(_ requestID: UInt64, now: Double, connected: Bool) -> (retry: Publication?, expired: Entry?) {
        guard let entry = entries[requestID] else { return (nil, nil) }
        if entry.deadline <= now { return (nil, remove(requestID)) }
        guard connected, let last = entry.lastSent, now - last >= retryWait(entry) else { return (nil, nil) }
        entries[requestID]!.lastSent = now
        entries[requestID]!.attempts += 1
        retries += 1
        return (Publication(requestID: requestID, messages: entry.messages, retry: true), nil)
    }

    /// When the first of all requests next needs attention (milliseconds), nil when none waits.
    func nextEvent() -> Double? {
        entries.keys.lazy.compactMap { nextEvent(for: $0) }.min()
    }

    /// Everything due at `now`, for every request: retries to publish, and the requests whose
    /// deadline has passed (removed), oldest id first.
    mutating func serviceAll(now: Double, connected: Bool) -> (retries: [Publication], expired: [(UInt64, Entry)]) {
        var retries: [Publication] = []
        var expired: [(UInt64, Entry)] = []
        for id in entries.keys.sorted() {
            let (retry, gone) = service(id, now: now, connected: connected)
            if let retry { retries.append(retry) }
            if let gone { expired.append((id, gone)) }
        }
        return (retries, expired)
    }

    /// When `requestID` next needs attention (milliseconds), nil once it is gone.
    func nextEvent(for requestID: UInt64) -> Double? {
        guard let entry = entries[requestID] else { return nil }
        guard let last = entry.lastSent else { return entry.deadline }
        return min(entry.deadline, last + retryWait(entry))
    }

    /// `retryAfter`, doubled per attempt up to eight times.
    private func retryWait(_ entry: Entry) -> Double {
        retryAfter * Double(1 << min(3, max(0, entry.attempts - 1)))
    }
}
