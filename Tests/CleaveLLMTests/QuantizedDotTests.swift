import CleaveTensor
import Testing

@testable import CleaveLLM

/// Each integer kernel against the same product done the slow way: dequantized weights times
/// the activations' own 8-bit values (d_a·q_a) in double precision. Both sides see exactly the
/// same numbers, so only float rounding may separate them.
@Suite struct QuantizedDotTests {
    @Test(arguments: [GGMLType.q4_0, .q4_1, .q8_0, .q4_K, .q6_K], [1, 3, 4, 9])
    func integerKernelEqualsDequantizedProduct(type: GGMLType, tokens: Int) throws {
        let rows = 6
        let columns = 512
        var random = SeededValues(state: 11)
        var writer = GGUFWriter()
        writer.addTensor("w", shape: [columns, rows], type: type, values: random.floats(rows * columns))
        let file = try GGUFFile(bytes: writer.bytes())
        let weights = try file.floats(file.tensor(named: "w")!)
        let matrix = try WeightMatrix(file, "w", rows: rows, columns: columns)
        #expect(QuantizedDot.hasIntegerKernel(type))

        let x = Activations(tokens: tokens, columns: columns)
        x.reset(tokens: tokens, columns: columns)
        for i in 0..<(tokens * columns) { x.floats[i] = random.float(scale: Float(1 + i % 7)) }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: rows * tokens)
        defer { out.deallocate() }
        matrix.multiply(x, into: out, workers: WorkerTeam(threads: 2))

        for t in 0..<tokens {
            // The activations as the kernel sees them: d_a · q_a per block of 32.
            let seen: [Double] = (0..<columns).map { c in
                let block = c / 32
                let j = c % 32
                let q = x.quants[t * columns + 32 * block + (j & 1) * 16 + j / 2]
                return Double(x.scales[t * (columns / 32) + block]) * Double(q)
            }
            for r in 0..<rows {
                let exact = (0..<columns).reduce(0.0) { $0 + Double(weights[r * columns + $1]) * seen[$1] }
                let magnitude = (0..<columns).reduce(0.0) { $0 + abs(Double(weights[r * columns + $1]) * seen[$1]) }
                let got = Double(out[t * rows + r])
                // Q4_1's offset term uses s = d·Σq rounded to float16, as ggml's Q8_1 does.
                let tolerance = (type == .q4_1 ? 2e-3 : 1e-5) * magnitude
                #expect(abs(got - exact) <= tolerance, "\(type) row \(r) token \(t): \(got) vs \(exact)")
            }
        }
    }
}
