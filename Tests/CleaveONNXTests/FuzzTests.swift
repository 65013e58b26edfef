import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveONNX

/// Structure-aware fuzzing of the two formats a model folder brings in from outside: NPY
/// tensors (their headers: dtype, order, shape) and ONNX models (protobuf bytes, then dims,
/// attributes and planning). 100,000 cases each; every case gives a value or an error, never
/// a trap or an allocation the input's size does not justify.
@Suite struct ONNXFuzzTests {
    /// NPY files whose header dictionaries are assembled from plausible and hostile parts.
    @Test func structuredNPYHeadersNeverTrap() {
        var generator = SeededGenerator(seed: 77)
        func pick<T>(_ options: [T]) -> T { options[Int(generator.next() % UInt64(options.count))] }
        let descriptors = ["<f4", "<f8", "<i8", "<i4", "|u1", "<f2", ">f4", "|b1", "<c8", "zz", "", "<f4'", "<u8"]
        let dimensions = ["0", "1", "2", "3", "-1", "4294967296", "9223372036854775807", "2305843009213693952", "99999999999999999999", "x", ""]
        var decoded = 0
        for _ in 0..<100_000 {
            let rank = Int(generator.next() % 6)
            let shape = (0..<rank).map { _ in pick(dimensions) }.joined(separator: ", ") + (rank == 1 && generator.next() % 2 == 0 ? "," : "")
            let order = pick(["False", "True", "0", "Flase"])
            var header = "{'descr': '\(pick(descriptors))', 'fortran_order': \(order), 'shape': (\(shape)), }"
            if generator.next() % 8 == 0 { header.removeLast(Int(generator.next() % UInt64(header.count))) }
            let padded = header + String(repeating: " ", count: Int(generator.next() % 20)) + "\n"
            var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
            let length = generator.next() % 16 == 0 ? UInt16(truncatingIfNeeded: generator.next()) : UInt16(padded.utf8.count)
            bytes += [UInt8(length & 0xFF), UInt8(length >> 8)] + Array(padded.utf8)
            bytes += (0..<Int(generator.next() % 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if (try? NPY.decode(Data(bytes), source: "fuzz")) != nil { decoded += 1 }
        }
        #expect(decoded > 0, "some assembled headers are valid")
    }

    /// Mutated and truncated ONNX models: loading, planning and (for what loads) running give a
    /// model, an error or an output, never a trap.
    @Test func mutatedModelsNeverTrap() throws {
        let valid = try ModelFixture.residualCNN()
        let input = Tensor(shape: [1, 3, 16, 16], scalars: (0..<768).map { Float($0 % 64) / 64 })
        var generator = SeededGenerator(seed: 78)
        var loaded = 0
        var ran = 0
        for round in 0..<100_000 {
            var bytes = [UInt8](valid)
            switch round % 4 {
            case 0, 1:
                for _ in 0...(generator.next() % 3) {
                    bytes[Int(generator.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
                }
            case 2:
                // A varint (a length, a dimension, an attribute value) made huge or negative.
                let at = Int(generator.next() % UInt64(bytes.count - 10))
                let value = generator.next() % 2 == 0 ? UInt64.max : generator.next()
                var encoded: [UInt8] = []
                var rest = value
                repeat {
                    encoded.append(UInt8(rest & 0x7F) | (rest > 0x7F ? 0x80 : 0))
                    rest >>= 7
                } while rest > 0
                bytes.replaceSubrange(at..<min(bytes.count, at + encoded.count), with: encoded)
            default:
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count))))
            }
            guard let model = try? Model(serialized: Data(bytes)) else { continue }
            loaded += 1
            // Planning and running are costlier than parsing: every 8th loaded model runs.
            guard loaded % 8 == 0 else { continue }
            if (try? InferenceSession(model: model, threads: 1).run(["x": input])) != nil { ran += 1 }
        }
        #expect(loaded > 0 && ran > 0, "\(loaded) loaded, \(ran) ran")
    }
}
