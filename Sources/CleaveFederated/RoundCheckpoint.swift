import CleaveSupport
import Foundation

/// A synchronous run's state after a round: enough to continue exactly as if it had not stopped.
///
/// One JSON file, rewritten whole after every round through `SystemCall.writeFileAtomically`
/// (temporary name, `fsync`, `rename`): a crash at any moment leaves either the previous
/// round's file or this one's, never a torn one. A journal of our own rather than SQLite:
/// the state is one value of ~0.5 MB replaced each round, nothing is queried, and the
/// coordinator gains no dependency.
struct RoundCheckpoint: Codable {
    var fingerprint: String
    var round: Int
    var time: Double
    var global: [Float]
    var aggregatorState: [Double]
    /// Positions of the sampling and attack random streams.
    var sampling: UInt64
    var attack: UInt64
    var feedback: [ErrorFeedback]
    var bytesDown: Int
    var bytesUp: Int
    var records: [AggregationRecord]

    func save(_ path: String) throws {
        do {
            try SystemCall.writeFileAtomically(path, [UInt8](try JSONEncoder().encode(self)))
        } catch {
            throw FederatedError("cannot write the checkpoint \(path): \(error)")
        }
    }

    /// The checkpoint at `path`, nil when there is none; refused when it is of other settings or unreadable.
    static func load(_ path: String, fingerprint: String) throws -> RoundCheckpoint? {
        guard SystemCall.isReadable(path) else { return nil }
        let checkpoint: RoundCheckpoint
        do {
            checkpoint = try JSONDecoder().decode(RoundCheckpoint.self, from: Data(try SystemCall.readFile(path)))
        } catch {
            throw FederatedError("the checkpoint \(path) is unreadable (\(error)); remove it to start afresh")
        }
        guard checkpoint.fingerprint == fingerprint else {
            throw FederatedError("the checkpoint \(path) is of another run (\(checkpoint.fingerprint)); remove it or name another file")
        }
        return checkpoint
    }
}
