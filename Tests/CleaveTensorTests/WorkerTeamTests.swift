import Synchronization
import Testing

@testable import CleaveTensor

@Suite struct WorkerTeamTests {
    @Test(arguments: [1, 2, 3])
    func everyIndexRunsOnceInEveryLoop(threads: Int) {
        let team = WorkerTeam(threads: threads)
        #expect(team.threads == threads)
        for count in [0, 1, 2, 7, 1000] {
            for _ in 0..<200 {
                let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(count, 1))
                hits.initialize(repeating: 0)
                team.parallelFor(count) { range in for i in range { hits[i] += 1 } }
                #expect(hits.prefix(count).allSatisfy { $0 == 1 }, "\(threads) threads, \(count) items")
                hits.deallocate()
            }
        }
    }

    @Test func everyWorkerTakesPartAndTeamsShutDown() {
        for _ in 0..<20 {
            let team = WorkerTeam(threads: 3)
            let seen = Mutex<Set<Int>>([])
            team.run { worker in _ = seen.withLock { $0.insert(worker) } }
            #expect(seen.withLock { $0 } == [0, 1, 2])
        }
    }
}
