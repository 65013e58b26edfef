import CleaveONNX
import CleaveTensor
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Dynamic batching for one model: requests wait until `maximumBatch` of them are
/// waiting or the first has waited `maximumWait`, then go to an idle worker as one batch.
///
/// Each worker is one thread running one batch at a time, so `workers` batches run in
/// parallel on as many cores. The model runs on the worker's thread, never inside the
/// actor, so new requests keep joining the next batch while one computes; when every
/// worker is busy a due batch simply grows (up to `maximumBatch`) until one is free.
actor TailBatcher {
    private typealias Waiting = (input: Tensor, continuation: CheckedContinuation<(Tensor, Int), Error>)

    private let inputName: String
    private let maximumBatch: Int
    private let maximumWait: Duration
    private var idle: [TailWorker]
    private var waiting: [Waiting] = []
    /// The waiting requests may go as a smaller batch (the oldest has waited `maximumWait`).
    private var due = false
    /// Bumped whenever `waiting` empties, so a stale timer does not mark a newer group due.
    private var generation = 0

    /// `batchTime`: every batch takes at least this long (an emulated slower machine; nil: as
    /// fast as it computes).
    init(session: InferenceSession, inputName: String, maximumBatch: Int, maximumWait: Duration, workers: Int, batchTime: Duration? = nil) {
        self.inputName = inputName
        self.maximumBatch = max(1, maximumBatch)
        self.maximumWait = maximumWait
        idle = (0..<max(1, workers)).map { TailWorker(session: session, index: $0, batchTime: batchTime) }
    }

    /// Runs `input` (`[1, …]`) with whatever else arrives in the window; returns its output row and the batch size.
    func submit(_ input: Tensor) async throws -> (Tensor, Int) {
        try await withCheckedThrowingContinuation { continuation in
            waiting.append((input, continuation))
            if waiting.count == 1 && maximumBatch > 1 {
                let expected = generation
                Task {
                    try? await Task.sleep(for: maximumWait)
                    self.markDue(generation: expected)
                }
            }
            dispatchReadyBatches()
        }
    }

    private func markDue(generation expected: Int) {
        guard generation == expected else { return }
        due = true
        dispatchReadyBatches()
    }

    private func dispatchReadyBatches() {
        while !idle.isEmpty, !waiting.isEmpty, due || waiting.count >= maximumBatch || maximumBatch == 1 {
            let worker = idle.removeLast()
            let take = min(maximumBatch, waiting.count)
            let batch = Array(waiting.prefix(take))
            waiting.removeFirst(take)
            if waiting.isEmpty {
                due = false
                generation += 1
            }
            Task { await run(batch, on: worker) }
        }
    }

    private func run(_ batch: [Waiting], on worker: TailWorker) async {
        let rows = batch.map(\.input)
        do {
            let output = try await worker.run(rows, inputName: inputName)
            let rowShape = [1] + Array(output.shape.dropFirst())
            let rowBytes = output.byteCount / rows.count
            let bytes = output.bytes()
            for (index, item) in batch.enumerated() {
                let row = Tensor(shape: rowShape, dtype: output.dtype, bytes: bytes[(index * rowBytes)..<((index + 1) * rowBytes)])
                item.continuation.resume(returning: (row, rows.count))
            }
        } catch {
            for item in batch { item.continuation.resume(throwing: error) }
        }
        idle.append(worker)
        dispatchReadyBatches()
    }
}

/// One thread that runs batches through a shared session (each run has its own arena).
final class TailWorker: Sendable {
    private let session: InferenceSession
    private let queue: DispatchQueue
    private let batchTime: Duration?

    init(session: InferenceSession, index: Int, batchTime: Duration? = nil) {
        self.session = session
        self.batchTime = batchTime
        queue = DispatchQueue(label: "cleave.tail-worker.\(index)")
    }

    /// Stacks `rows` into one batch, runs it on this worker's thread and returns the first output.
    func run(_ rows: [Tensor], inputName: String) async throws -> Tensor {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [session, batchTime] in
                let started = ContinuousClock.now
                let result = Result {
                    let joined = Tensor(zeros: [rows.count] + Array(rows[0].shape.dropFirst()), dtype: rows[0].dtype)
                    Layout.concat(rows, axis: 0, into: joined)
                    guard let output = try session.run([inputName: joined]).values.first else {
                        throw ONNXErrorDescription(description: "the tail produced no output")
                    }
                    return output
                }
                // An emulated slower machine: the batch is answered once its time is up.
                if let batchTime, case let left = batchTime - (ContinuousClock.now - started), left > .zero {
                    usleep(UInt32(clamping: Int(left.milliseconds * 1000)))
                }
                continuation.resume(with: result)
            }
        }
    }
}

struct ONNXErrorDescription: Error, CustomStringConvertible {
    let description: String
}
