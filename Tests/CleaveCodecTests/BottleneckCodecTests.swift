import CleaveSupport
import CleaveTensor
import Foundation
import Testing

@testable import CleaveCodec

@Suite struct BottleneckCodecTests {
    let features = Tensor(shape: [1, 4, 3, 3], scalars: (0..<36).map { Float(($0 * 29) % 37) / 6 - 2 })

    func maximumError(_ a: Tensor, _ b: Tensor) -> Float {
        zip(a.scalars(as: Float.self), b.scalars(as: Float.self)).map { abs($0 - $1) }.max() ?? 0
    }

    @Test(arguments: FrameCodec.allCases, [false, true])
    func roundTripWithinQuantizationStep(codec: FrameCodec, zstd: Bool) throws {
        for perChannel in [false, true] {
            let options = FrameOptions(codec: codec, zstdLevel: zstd ? 3 : nil, perChannel: perChannel)
            let frame = BottleneckCodec.encode(features, requestID: 300, options: options)
            let decoded = try BottleneckCodec.decode(frame, expectedShape: [1, 4, 3, 3])
            #expect(decoded.requestID == 300)
            #expect(decoded.codec == codec)
            let values = features.scalars(as: Float.self)
            let range = values.max()! - values.min()!
            let tolerance: Float =
                switch codec {
                case .float32: 0
                case .float16: 0.002
                case .uint8: range / 255 / 2 + 1e-5
                case .int4: range / 15 / 2 + 1e-5
                }
            #expect(maximumError(decoded.tensor, features) <= tolerance, "\(codec) perChannel=\(perChannel)")
        }
    }

    @Test func commonCaseHeaderIsAtMostSixteenBytes() {
        let frame = BottleneckCodec.encode(features, requestID: 1_000_000, options: FrameOptions(codec: .uint8, zstdLevel: 3))
        let payloadLength = frame.count - 16
        #expect(payloadLength > 0)
        // magic, version/codec, flags, 3-byte request id, scale + zero, 1-byte length = 12; CRC = 4.
        let header = 3 + 3 + 5 + 1
        #expect(frame.count == header + payloadLength + 4)
    }

    @Test func zstdIsUsedOnlyWhenItShrinksThePayload() throws {
        let tiny = Tensor(shape: [1, 2, 4, 4], scalars: (0..<32).map { Float($0 % 7) - 3 })
        let small = BottleneckCodec.encode(tiny, requestID: 5, options: FrameOptions(codec: .int4, zstdLevel: 3))
        #expect(small.count == 3 + 1 + 5 + 1 + 16 + 4)
        #expect(try BottleneckCodec.decode(small, expectedShape: tiny.shape).compressed == false)
        let zeros = Tensor(zeros: [1, 8, 16, 16])
        let large = BottleneckCodec.encode(zeros, requestID: 5, options: FrameOptions(codec: .uint8, zstdLevel: 3))
        #expect(large.count < 100)
        #expect(try BottleneckCodec.decode(large, expectedShape: zeros.shape).compressed)
    }

    @Test func shapeAndContextTravelWhenAsked() throws {
        let context = FrameContext(modelDigest: [1, 2, 3, 4, 5, 6, 7, 8], splitID: 2)
        let frame = BottleneckCodec.encode(features, requestID: 7, options: FrameOptions(codec: .float16, includeShape: true, context: context))
        let decoded = try BottleneckCodec.decode(frame)
        #expect(decoded.tensor.shape == [1, 4, 3, 3])
        #expect(decoded.context == context)
        #expect(throws: FrameError.shapeMismatch(expected: [1, 36], got: [1, 4, 3, 3])) {
            _ = try BottleneckCodec.decode(frame, expectedShape: [1, 36])
        }
    }

    @Test func wrongChecksumIsRejected() {
        var frame = BottleneckCodec.encode(features, requestID: 9)
        frame[5] ^= 0x40
        #expect {
            _ = try BottleneckCodec.decode(frame, expectedShape: [1, 4, 3, 3])
        } throws: { error in
            if case .checksumMismatch = error as? FrameError { true } else { false }
        }
    }

    @Test func oversizedPayloadIsRejectedBeforeAllocating() {
        let big = Tensor(zeros: [1, 64, 64, 64])
        let frame = BottleneckCodec.encode(big, requestID: 1, options: FrameOptions(codec: .float32, zstdLevel: nil, includeShape: true))
        #expect {
            _ = try BottleneckCodec.decode(frame, limits: FrameLimits(maximumPayloadBytes: 1 << 16, maximumElements: 1 << 20))
        } throws: { error in
            if case .limitExceeded = error as? FrameError { true } else { false }
        }
    }

    @Test func crc32cKnownValue() {
        // The standard check value of CRC-32C over the ASCII digits 1 to 9.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    /// Feeds 100,000 random and mutated frames to the decoder; it must throw or decode, never trap.
    /// Tensors no model should make still encode (never a trap) into frames that decode:
    /// subnormal, huge, non-finite and empty values, for every codec, per tensor and per channel.
    @Test(arguments: FrameCodec.allCases)
    func extremeValuesEncodeAndDecode(codec: FrameCodec) throws {
        let tiny = Float.leastNonzeroMagnitude
        let huge = Float.greatestFiniteMagnitude
        let cases: [(String, [Float])] = [
            ("subnormal", [tiny, 2 * tiny, 0, tiny, 3 * tiny, tiny, 0, tiny]), ("huge", [huge, -huge, 0, huge, -huge, 1, -1, 0]),
            ("non-finite", [.nan, .infinity, -.infinity, .nan, 1, -1, .nan, 0]), ("all NaN", [Float](repeating: .nan, count: 8)),
            ("zeros", [Float](repeating: 0, count: 8)),
        ]
        for (name, values) in cases {
            for perChannel in [false, true] {
                let tensor = Tensor(shape: [1, 2, 2, 2], scalars: values)
                let frame = BottleneckCodec.encode(tensor, requestID: 3, options: FrameOptions(codec: codec, perChannel: perChannel))
                let decoded = try BottleneckCodec.decode(frame, expectedShape: [1, 2, 2, 2])
                let back = decoded.tensor.scalars(as: Float.self)
                if codec.isAffine {
                    #expect(back.allSatisfy { !$0.isNaN }, "\(name) \(codec) perChannel=\(perChannel): \(back)")
                }
                if name == "subnormal" || name == "zeros" {
                    #expect(back.allSatisfy { abs($0) <= 4 * tiny }, "\(name) \(codec): \(back)")
                }
            }
        }
        let empty = BottleneckCodec.encode(Tensor(shape: [1, 0], scalars: [Float]()), requestID: 4, options: FrameOptions(codec: codec))
        let decodedEmpty = try BottleneckCodec.decode(empty, expectedShape: [1, 0])
        #expect(decodedEmpty.tensor.shape == [1, 0])
    }

    /// 100,000 random tensors — subnormal, NaN, ±Inf, ±max, empty, one to many channels — in
    /// every codec and option: each encodes and decodes back to its shape, affine codecs
    /// never yield NaN, and nothing traps.
    @Test func fuzzEncoderNeverTraps() throws {
        var generator = SeededGenerator(seed: 5)
        let specials: [Float] = [
            .nan, .infinity, -.infinity, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, -.leastNonzeroMagnitude,
            .leastNormalMagnitude, 0, -0.0, 1, -1, 65504, 1e-8,
        ]
        for _ in 0..<100_000 {
            let shape = [1, Int(generator.next() % 5), 1 + Int(generator.next() % 3), 1 + Int(generator.next() % 3)]
            let count = shape.reduce(1, *)
            let scalars = (0..<count).map { _ in
                generator.next() % 3 == 0 ? specials[Int(generator.next() % UInt64(specials.count))] : Float(generator.normal()) * 10
            }
            let codec = FrameCodec.allCases[Int(generator.next() % UInt64(FrameCodec.allCases.count))]
            let options = FrameOptions(
                codec: codec, zstdLevel: generator.next() % 4 == 0 ? 3 : nil, perChannel: generator.next() % 2 == 0,
                includeShape: generator.next() % 2 == 0)
            let frame = BottleneckCodec.encode(Tensor(shape: shape, scalars: scalars), requestID: generator.next() >> 1, options: options)
            let decoded = try BottleneckCodec.decode(frame, expectedShape: shape)
            #expect(decoded.tensor.shape == shape)
            if codec.isAffine, decoded.tensor.scalars(as: Float.self).contains(where: \.isNaN) {
                Issue.record("\(codec) gave NaN for \(scalars)")
                return
            }
        }
    }

    @Test func fuzzDecoderNeverTraps() {
        var generator = SeededGenerator(seed: 42)
        var seeds: [[UInt8]] = []
        for codec in FrameCodec.allCases {
            for zstd in [nil, 1] as [Int?] {
                seeds.append(
                    BottleneckCodec.encode(
                        features, requestID: 77, options: FrameOptions(codec: codec, zstdLevel: zstd, perChannel: codec.isAffine, includeShape: true))
                )
                seeds.append(BottleneckCodec.encode(features, requestID: 78, options: FrameOptions(codec: codec, zstdLevel: zstd)))
                let part = FrameRegion(top: 1, left: 0, height: 2, width: 3, parts: 2)
                let rows = Tensor(shape: [1, 4, 2, 3], scalars: Array(features.scalars(as: Float.self).prefix(24)))
                seeds.append(BottleneckCodec.encode(rows, requestID: 79, options: FrameOptions(codec: codec, zstdLevel: zstd, region: part)))
            }
        }
        var decoded = 0
        for round in 0..<100_000 {
            var bytes: [UInt8]
            if round % 10 == 0 {
                bytes = (0..<Int(generator.next() % 96)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            } else {
                bytes = seeds[Int(generator.next() % UInt64(seeds.count))]
                for _ in 0..<(1 + Int(generator.next() % 4)) {
                    let position = Int(generator.next() % UInt64(bytes.count))
                    switch generator.next() % 4 {
                    case 0: bytes[position] = UInt8(truncatingIfNeeded: generator.next())
                    case 1: bytes.removeSubrange(position...)
                    case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: position)
                    default: bytes[position] ^= 1 << UInt8(generator.next() % 8)
                    }
                    if bytes.isEmpty { break }
                }
                // Re-seal half of the mutants so that the checks behind the CRC are exercised too.
                if round % 2 == 0 && bytes.count > 4 {
                    let crc = CRC32C.checksum(bytes[..<(bytes.count - 4)])
                    for shift in 0..<4 { bytes[bytes.count - 4 + shift] = UInt8(truncatingIfNeeded: crc >> UInt32(8 * shift)) }
                }
            }
            if (try? BottleneckCodec.decode(bytes, expectedShape: round % 3 == 0 ? nil : [1, 4, 3, 3])) != nil { decoded += 1 }
        }
        #expect(decoded < 100_000)
    }

    /// The vectors printed in docs/wire-format.md decode to the values stated there.
    @Test func documentedVectorsDecode() throws {
        let doc = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../docs/wire-format.md").standardizedFileURL, encoding: .utf8)
        let vectors = doc.split(separator: "\n").filter { $0.hasPrefix("    vector ") }
        #expect(vectors.count >= 3)
        for line in vectors {
            // "    vector <shape> <values> = <hex>"
            let parts = line.split(separator: "=")
            let left = parts[0].split(separator: " ").dropFirst()
            let shape = left.first!.split(separator: "x").map { Int($0)! }
            let values = left.dropFirst().map { Float($0)! }
            let hex = parts[1].trimmingCharacters(in: .whitespaces)
            let bytes = stride(from: 0, to: hex.count, by: 2).map { offset -> UInt8 in
                let start = hex.index(hex.startIndex, offsetBy: offset)
                return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
            }
            let decoded = try BottleneckCodec.decode(bytes, expectedShape: shape)
            let got = decoded.tensor.scalars(as: Float.self)
            for (a, b) in zip(got, values) { #expect(abs(a - b) < 1e-6, "\(line)") }
        }
    }
}
