import CMosquitto
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Owns a libmosquitto handle and runs its network loop on a thread of its own.
///
/// The loop connects with the configured CONNECT properties (the session-expiry
/// interval of a persistent session), runs `mosquitto_loop` until the connection drops,
/// waits the back-off (doubling from the configured minimum to the maximum, reset when
/// the broker accepts a connection) and connects again, until ``stop(sendDisconnect:)``.
/// The thread keeps the connection alive while it runs, so the handle is destroyed only
/// after the loop has let go of it.
final class MosquittoConnection: @unchecked Sendable {
    let handle: OpaquePointer
    let sink: EventSink
    let configuration: MQTTConfiguration
    private let stopping = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    /// Set once when the loop has exited.
    private let exited = Atomic<Bool>(false)

    init(handle: OpaquePointer, sink: EventSink, configuration: MQTTConfiguration) {
        self.handle = handle
        self.sink = sink
        self.configuration = configuration
    }

    deinit {
        mosquitto_destroy(handle)
        sink.continuation.finish()
    }

    /// Starts the network thread (once).
    func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // The thread owns a retain of the connection until `run` returns.
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(
            &thread, nil,
            { context in
                let connection = Unmanaged<MosquittoConnection>.fromOpaque(context!).takeRetainedValue()
                connection.run()
                return nil
            }, context)
        if created == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<MosquittoConnection>.fromOpaque(context).release()
            sink.continuation.yield(.disconnected(code: Int(created)))
        }
    }

    /// Asks the loop to end; with `sendDisconnect` the broker gets a DISCONNECT first (so it
    /// does not publish the will).
    func stop(sendDisconnect: Bool) {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if sendDisconnect { mosquitto_disconnect_v5(handle, 0, nil) }
    }

    /// Waits until the loop has exited, at most `seconds`.
    func waitUntilStopped(seconds: Double) {
        guard started.load(ordering: .acquiring) else { return }
        Self.sleep(seconds) { self.exited.load(ordering: .acquiring) }
    }

    /// Sleeps `seconds` on the monotonic clock, in steps of at most 20 ms, until `done` holds.
    ///
    /// Not a timed semaphore wait: libdispatch on Linux turns that into `sem_timedwait` with a
    /// deadline on the wall clock, so a clock set back during the wait (NTP correcting a board)
    /// would stretch a 2 s reconnect back-off by the whole step.
    static func sleep(_ seconds: Double, until done: () -> Bool) {
        let end = ContinuousClock.now + .seconds(seconds)
        while !done() {
            let left = end - ContinuousClock.now
            guard left > .zero else { return }
            usleep(UInt32(min(20_000, max(1, left.components.attoseconds / 1_000_000_000_000 + left.components.seconds * 1_000_000))))
        }
    }

    // MARK: - The loop (on its own thread)

    private func run() {
        var delay = Double(max(1, configuration.reconnectDelay.minimum))
        let longest = Double(max(configuration.reconnectDelay.minimum, configuration.reconnectDelay.maximum))
        var linked = false
        // The first failed attempt in a row is reported (as a disconnection with libmosquitto's
        // code): a broker that is down, a refused TCP connection or a TLS handshake that fails
        // — a certificate the broker does not take, or a broker the CA does not vouch for —
        // would otherwise only be retried, silently, for ever.
        var reportedFailure = false
        // Whether the broker answered this link's CONNECT (accepted or refused), and since when
        // the link waits: a link that a middlebox accepted while the broker is away (a proxy,
        // a load balancer) can stay unanswered until the keep-alive ends it — 10 s and more —
        // so an answer is expected within 3 s, or the link is dropped and tried again at once
        // (the wait was the back-off); each such drop doubles the wait, up to the keep-alive, so
        // that a link too slow for 3 s (a TLS handshake over NB-IoT) still gets through.
        var answered = false
        var linkedAt = ContinuousClock.now
        let firstAnswerTimeout = Duration.seconds(3)
        var answerTimeout = firstAnswerTimeout
        while !stopping.load(ordering: .acquiring) {
            if !linked {
                let code = connectOnce()
                linked = code == MOSQ_ERR_SUCCESS.rawValue
                answered = false
                linkedAt = .now
                if !linked {
                    if !reportedFailure {
                        sink.continuation.yield(.disconnected(code: Int(code)))
                        reportedFailure = true
                    }
                    pause(delay)
                    delay = min(2 * delay, longest)
                    continue
                }
            }
            let code = mosquitto_loop(handle, 100, 1)
            if sink.established.exchange(false, ordering: .acquiringAndReleasing) {
                delay = Double(max(1, configuration.reconnectDelay.minimum))
                answerTimeout = firstAnswerTimeout
                reportedFailure = false
            }
            if sink.answered.exchange(false, ordering: .acquiringAndReleasing) { answered = true }
            var failure = code
            if code == MOSQ_ERR_SUCCESS.rawValue {
                guard !answered, ContinuousClock.now - linkedAt > answerTimeout else { continue }
                // Unanswered for too long: let go of this link (its socket closes in the loop).
                mosquitto_disconnect_v5(handle, 0, nil)
                _ = mosquitto_loop(handle, 10, 1)
                failure = MOSQ_ERR_TIMEOUT.rawValue
                answerTimeout = min(answerTimeout * 2, .seconds(max(3, configuration.keepAlive)))
                linked = false
                if !reportedFailure {
                    sink.continuation.yield(.disconnected(code: Int(failure)))
                    reportedFailure = true
                }
                continue
            }
            linked = false
            // The TLS handshake may finish in the loop rather than in the connect call: a
            // link that ends before the broker answered the CONNECT is a failed attempt too.
            if !answered && !reportedFailure {
                sink.continuation.yield(.disconnected(code: Int(failure)))
                reportedFailure = true
            }
            if stopping.load(ordering: .acquiring) { break }
            pause(delay)
            delay = min(2 * delay, longest)
        }
        // Whatever DISCONNECT `stop` queued goes out before the socket closes.
        _ = mosquitto_loop(handle, 10, 1)
        exited.store(true, ordering: .releasing)
    }

    /// One blocking connect with the CONNECT properties; the CONNACK arrives in the loop.
    private func connectOnce() -> Int32 {
        var properties: OpaquePointer? = nil
        defer { mosquitto_property_free_all(&properties) }
        if let expiry = configuration.sessionExpiry {
            _ = mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), UInt32(clamping: expiry))
        }
        return mosquitto_connect_bind_v5(handle, configuration.host, Int32(configuration.port), Int32(configuration.keepAlive), nil, properties)
    }

    /// Sleeps `seconds` unless ``stop(sendDisconnect:)`` comes first.
    private func pause(_ seconds: Double) {
        Self.sleep(seconds) { stopping.load(ordering: .acquiring) }
    }
}
