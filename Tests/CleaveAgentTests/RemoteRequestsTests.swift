import CleaveMQTT
import CleaveProtocol
import Testing

@testable import CleaveAgent

/// The agent's table of unanswered requests, without a broker: queueing, overflow, retries.
@Suite struct RemoteRequestsTests {
    typealias Table = RemoteRequests<String>

    func message(_ id: UInt64) -> MQTTMessage { MQTTMessage(topic: "t", payload: [UInt8(id % 256)], qos: 1) }

    @Test func connectedRequestsGoOutAtOnceAndAnswersResolveOnce() {
        var table = Table(offlineLimit: 4, retryAfter: 1000)
        let (publication, evicted) = table.add(1, message: message(1), now: 0, deadline: 5000, connected: true, waiter: "one")
        #expect(publication?.requestID == 1 && publication?.retry == false && evicted == nil)
        #expect(table.answer(1)?.waiter == "one")
        #expect(table.answer(1) == nil, "a second answer finds nothing")
        #expect(table.droppedAnswers == 1 && table.count == 0)
    }

    @Test func offlineRequestsWaitAndTheOldestLeavesAFullQueue() {
        var table = Table(offlineLimit: 3, retryAfter: 1000)
        for id in UInt64(1)...3 {
            let (publication, evicted) = table.add(id, message: message(id), now: 0, deadline: 9000, connected: false, waiter: "\(id)")
            #expect(publication == nil && evicted == nil)
        }
        let (_, evicted) = table.add(4, message: message(4), now: 0, deadline: 9000, connected: false, waiter: "4")
        #expect(evicted?.0 == 1 && evicted?.1.waiter == "1", "a full queue gives up its oldest request, to the caller")
        #expect(table.count == 3)
        let flushed = table.flush(now: 10)
        #expect(flushed.map(\.requestID) == [2, 3, 4], "the queue goes out in order on reconnect")
        #expect(flushed.allSatisfy { !$0.retry })
        #expect(table.flush(now: 11).isEmpty)
    }

    @Test func unansweredRequestsAreRetriedWithBackOffUntilTheDeadline() {
        var table = Table(offlineLimit: 4, retryAfter: 100)
        _ = table.add(7, message: message(7), now: 0, deadline: 1000, connected: true, waiter: "7")
        #expect(table.nextEvent(for: 7) == 100)
        #expect(table.service(7, now: 50, connected: true).retry == nil)
        #expect(table.service(7, now: 100, connected: true).retry?.retry == true)
        #expect(table.nextEvent(for: 7) == 300, "the second wait is twice the first")
        #expect(table.service(7, now: 300, connected: false).retry == nil, "no retry while disconnected")
        let (retry, expired) = table.service(7, now: 1000, connected: true)
        #expect(retry == nil && expired?.waiter == "7", "at the deadline the request is handed back")
        #expect(table.nextEvent(for: 7) == nil && table.retries == 1)
    }

    @Test func requestsInFlightWhenTheConnectionDropsGoOutAgainAfterReconnect() {
        var table = Table(offlineLimit: 4, retryAfter: 1000)
        _ = table.add(1, message: message(1), now: 0, deadline: 9000, connected: true, waiter: "1")
        table.disconnected()
        _ = table.add(2, message: message(2), now: 5, deadline: 9000, connected: false, waiter: "2")
        let flushed = table.flush(now: 20)
        #expect(flushed.map(\.requestID) == [1, 2])
        #expect(flushed.map(\.retry) == [true, false], "the one already sent counts as a retry")
        #expect(table.retries == 1)
        table.unsent(2)
        #expect(table.flush(now: 30).map(\.requestID) == [2], "a publish that failed waits for the next connection")
        #expect(table.removeAll().map(\.0) == [1, 2])
    }
}
