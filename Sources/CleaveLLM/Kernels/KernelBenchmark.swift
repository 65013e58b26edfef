import CleaveSupport
import CleaveTensor

/// Throughput of the matrix–vector kernels on a random matrix that stays in cache,
/// to tell compute-bound from memory-bound decoding (`cleave llm bench --kernels`).
public enum KernelBenchmark {
    /// One measured kernel.
    public struct Result: Sendable {
        public let type: GGMLType
        public let rows: Int
        public let columns: Int
        public let tokens: Int
        /// Weight bytes streamed per second.
        public let bytesPerSecond: Double
        /// Multiply-adds per second (rows × columns × tokens per product).
        public let multiplyAddsPerSecond: Double
    }

    /// Times `rows × columns` matrices of each type times `tokens` tokens for about `seconds` each.
    public static func run(
        types: [GGMLType] = [.q4_0, .q4_1, .q8_0, .q4_K, .q6_K, .f16], rows: Int = 256, columns: Int = 1536, tokens: Int = 1,
        seconds: Double = 0.5, threads: Int = 1
    ) throws -> [Result] {
        var results: [Result] = []
        let workers = WorkerTeam(threads: threads)
        var state: UInt64 = 1
        func random() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state) >> 40) / Float(1 << 23)
        }
        let x = Activations(tokens: tokens, columns: columns)
        x.reset(tokens: tokens, columns: columns)
        for i in 0..<(tokens * columns) { x.floats[i] = random() }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: rows * tokens)
        defer { out.deallocate() }
        let clock = ContinuousClock()
        for type in types {
            var writer = GGUFWriter()
            writer.addTensor("w", shape: [columns, rows], type: type, values: (0..<(rows * columns)).map { _ in random() })
            let file = try GGUFFile(bytes: writer.bytes())
            let matrix = try WeightMatrix(file, "w", rows: rows, columns: columns)
            matrix.multiply(x, into: out, workers: workers)
            var repeats = 0
            let start = clock.now
            var elapsed = 0.0
            while elapsed < seconds {
                for _ in 0..<16 { matrix.multiply(x, into: out, workers: workers) }
                repeats += 16
                let duration = clock.now - start
                elapsed = duration.seconds
            }
            results.append(
                Result(
                    type: type, rows: rows, columns: columns, tokens: tokens,
                    bytesPerSecond: Double(matrix.rowStride * rows * repeats) / elapsed,
                    multiplyAddsPerSecond: Double(rows * columns * tokens * repeats) / elapsed))
        }
        return results
    }
}
