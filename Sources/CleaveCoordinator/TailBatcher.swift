import CleaveONNX
import CleaveTensor

/// Collects requests for one model and runs them as a batch: when `maximumBatch`
/// are waiting, or `maximumWait` after the first arrived, whichever comes first.
actor TailBatcher {
    private let session: InferenceSession
    private let inputName: String
    private let maximumBatch: Int
    private let maximumWait: Duration
    private var waiting: [(input: Tensor, continuation: CheckedContinuation<(Tensor, Int), Error>)] = []
    private var generation = 0

    init(session: InferenceSession, inputName: String, maximumBatch: Int, maximumWait: Duration) {
        self.session = session
        self.inputName = inputName
        self.maximumBatch = max(1, maximumBatch)
        self.maximumWait = maximumWait
    }

    /// Runs `input` (`[1, …]`) with whatever else arrives in the window; returns its output row and the batch size.
    func submit(_ input: Tensor) async throws -> (Tensor, Int) {
        try await withCheckedThrowingContinuation { continuation in
            waiting.append((input, continuation))
            if waiting.count >= maximumBatch {
                flush()
            } else if waiting.count == 1 {
                let expected = generation
                Task {
                    try? await Task.sleep(for: maximumWait)
                    self.flush(ifGeneration: expected)
                }
            }
        }
    }

    private func flush(ifGeneration expected: Int) {
        if generation == expected { flush() }
    }

    private func flush() {
        guard !waiting.isEmpty else { return }
        generation += 1
        let batch = waiting
        waiting = []
        let rows = batch.map(\.input)
        do {
            let joined = Tensor(zeros: [rows.count] + Array(rows[0].shape.dropFirst()))
            Layout.concat(rows, axis: 0, into: joined)
            guard let output = try session.run([inputName: joined]).values.first else {
                throw ONNXErrorDescription(description: "the tail produced no output")
            }
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
    }
}

struct ONNXErrorDescription: Error, CustomStringConvertible {
    let description: String
}
