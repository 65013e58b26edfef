import CleaveCodec
import CleaveSupport
import Testing

@testable import CleaveFederated

@Suite struct UpdateCodecTests {
    static let layout = WeightLayout([("conv.weight", [4, 3, 2, 2]), ("conv.bias", [4]), ("fc.weight", [5, 7])])

    static func randomUpdate(seed: UInt64, scale: Double = 0.01) -> ClientUpdate {
        var generator = SeededGenerator(seed: seed)
        let delta = (0..<layout.count).map { index in Float(generator.normal() * scale * Double(1 + index % 5)) }
        return ClientUpdate(client: 3, examples: 640, delta: delta, baseVersion: 7)
    }

    @Test(arguments: [
        UpdateCompression.float32, .float16, .int8(perChannel: false), .int8(perChannel: true), .int4(perChannel: false),
        .int4(perChannel: true), .topK(fraction: 0.1), .sign,
    ])
    func roundTripKeepsHeaderAndValuesWithinTheCodecsError(compression: UpdateCompression) throws {
        let update = Self.randomUpdate(seed: 1)
        let frame = UpdateCodec.encode(update, layout: Self.layout, compression: compression)
        let decoded = try UpdateCodec.decode(frame, layout: Self.layout, expectedBaseVersion: 7)
        #expect(decoded.client == 3 && decoded.examples == 640 && decoded.baseVersion == 7)
        let largest = update.delta.map(abs).max()!
        for entry in Self.layout.entries {
            let sent = Array(update.delta[entry.range])
            let received = Array(decoded.delta[entry.range])
            let span = (sent.max()! - min(0, sent.min()!)) + max(0, -sent.min()!)
            switch compression {
            case .float32: #expect(received == sent)
            case .float16: #expect(zip(sent, received).allSatisfy { abs($0 - $1) <= abs($0) / 1024 + 1e-7 })
            case .int8(let perChannel), .int4(let perChannel):
                let levels: Float = if case .int8 = compression { 255 } else { 15 }
                // Per tensor the step is the tensor's span / levels; per channel never larger.
                let step = span / levels
                #expect(zip(sent, received).allSatisfy { abs($0 - $1) <= step / 2 * 1.0001 + 1e-7 }, "\(entry.name) perChannel \(perChannel)")
            case .topK:
                let kept = received.filter { $0 != 0 }.count
                #expect(kept == max(1, Int((0.1 * Double(entry.count)).rounded())))
                let smallestKept = zip(sent, received).filter { $1 != 0 }.map { abs($0.0) }.min()!
                let largestDropped = zip(sent, received).filter { $1 == 0 }.map { abs($0.0) }.max() ?? 0
                #expect(smallestKept >= largestDropped)
            case .sign:
                let scale = sent.map(abs).reduce(0, +) / Float(sent.count)
                #expect(zip(sent, received).allSatisfy { abs(abs($1) - scale) <= scale * 1e-5 && ($0 < 0) == ($1 < 0) })
            }
        }
        #expect(largest > 0)
    }

    @Test func compressedFramesAreAsSmallAsTheirBitsPerValue() {
        let update = Self.randomUpdate(seed: 2)
        let size = { (compression: UpdateCompression) in UpdateCodec.encode(update, layout: Self.layout, compression: compression).count }
        let values = Self.layout.count
        #expect(size(.float32) <= 4 * values + 32)
        #expect(size(.float16) <= 2 * values + 32)
        #expect(size(.int4(perChannel: false)) <= values / 2 + 3 * 6 + 32)
        #expect(size(.sign) <= values / 8 + 3 * (4 + 1) + 32)
        // On a model of 10,000 values the header no longer counts: 1% kept is ≥ 40× smaller.
        let large = WeightLayout([("w", [100, 100])])
        let big = ClientUpdate(client: 0, examples: 1, delta: (0..<10_000).map { Float($0 % 97) - 48 }, baseVersion: 0)
        let sparse = UpdateCodec.encode(big, layout: large, compression: .topK(fraction: 0.01)).count
        #expect(sparse < UpdateCodec.encode(big, layout: large, compression: .float32).count / 40)
    }

    @Test func errorFeedbackSendsInTheEndWhatCompressionHeldBack() throws {
        var feedback = ErrorFeedback()
        var sentTotal = [Float](repeating: 0, count: Self.layout.count)
        var trueTotal = sentTotal
        for round in 0..<40 {
            let update = Self.randomUpdate(seed: UInt64(100 + round))
            let frame = try feedback.encode(update, layout: Self.layout, compression: .topK(fraction: 0.05))
            let sent = try UpdateCodec.decode(frame, layout: Self.layout).delta
            for index in sentTotal.indices {
                sentTotal[index] += sent[index]
                trueTotal[index] += update.delta[index]
            }
        }
        // What was sent plus what is still held back is exactly what was trained (up to half-precision rounding).
        let gap = zip(trueTotal, sentTotal).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) }
        #expect(abs(gap - feedback.heldBackMagnitude) < 1e-3 * max(1, gap))
        // And it stays bounded: far less than the 40 rounds' total magnitude.
        let total = trueTotal.reduce(0.0) { $0 + Double(abs($1)) }
        #expect(feedback.heldBackMagnitude < 0.5 * total + 1)
        var plain = ErrorFeedback()
        _ = try plain.encode(Self.randomUpdate(seed: 1), layout: Self.layout, compression: .float32)
        #expect(plain.heldBackMagnitude == 0)
    }

    @Test func updatesForAnotherModelRoundOrWithNonFiniteValuesAreRefused() {
        let update = Self.randomUpdate(seed: 3)
        let frame = UpdateCodec.encode(update, layout: Self.layout, compression: .float16)
        let other = WeightLayout([("conv.weight", [4, 3, 2, 2]), ("conv.bias", [4]), ("fc.weight", [7, 5])])
        #expect(throws: FederatedError("the update is for another model (its layout digest differs from this run's)")) {
            try UpdateCodec.decode(frame, layout: other)
        }
        #expect(throws: FederatedError("client 3's update is for round 8; the server is at round 10")) {
            try UpdateCodec.decode(frame, layout: Self.layout, expectedBaseVersion: 9)
        }
        var poisoned = update
        poisoned.delta[5] = .nan
        #expect(throws: FederatedError("client 3 sent a non-finite value (nan) at position 5")) {
            try UpdateCodec.decode(UpdateCodec.encode(poisoned, layout: Self.layout, compression: .float32), layout: Self.layout)
        }
        poisoned.delta[5] = .infinity
        #expect(throws: FederatedError("client 3 sent a non-finite value (inf) at position 5")) {
            try UpdateCodec.decode(UpdateCodec.encode(poisoned, layout: Self.layout, compression: .float16), layout: Self.layout)
        }
        var corrupt = frame
        corrupt[20] ^= 0x40
        #expect(throws: FederatedError("the update frame's checksum does not match")) { try UpdateCodec.decode(corrupt, layout: Self.layout) }
        #expect(throws: FederatedError("an update frame of 3 bytes is truncated")) { try UpdateCodec.decode([1, 2, 3], layout: Self.layout) }
        #expect(throws: FederatedError.self) { try UpdateCompression(name: "topk:0") }
    }

    @Test func badUpdatesDoNotTouchTheAggregate() throws {
        let global = [Float](repeating: 1, count: 3)
        var nan = ClientUpdate(client: 1, examples: 5, delta: [0, .nan, 0], baseVersion: 0)
        #expect(throws: FederatedError("client 1 sent a non-finite value (nan) at position 1")) {
            try FederatedAveraging().aggregate(
                global: global, updates: [ClientUpdate(client: 0, examples: 5, delta: [1, 1, 1], baseVersion: 0), nan], round: 1)
        }
        nan.baseVersion = 3
        nan.delta = [0, 0, 0]
        #expect(throws: FederatedError("client 1's update is for round 4, not round 1")) {
            try FederatedAveraging().aggregate(global: global, updates: [nan], round: 1)
        }
        var buffer = try BufferedAggregation(bufferSize: 1)
        #expect(throws: FederatedError.self) {
            try buffer.receive(ClientUpdate(client: 0, examples: 1, delta: [.infinity, 0, 0], baseVersion: 0), global: global, version: 0, now: 0)
        }
        #expect(buffer.buffered == 0)
    }

    /// 100,000 mutated and truncated frames of every compression: each is decoded or refused with a
    /// `FederatedError`, never a trap.
    @Test func fuzzedFramesAreRefusedNotTrapped() {
        var generator = SeededGenerator(seed: 99)
        let compressions: [UpdateCompression] = [.float32, .float16, .int8(perChannel: true), .int4(perChannel: false), .topK(fraction: 0.2), .sign]
        var refused = 0
        let cases = 100_000
        // 60 valid frames (10 updates × every compression), each mutated afresh in every case.
        let frames = (0..<60).map { index in
            UpdateCodec.encode(
                Self.randomUpdate(seed: UInt64(index % 10)), layout: Self.layout, compression: compressions[index % compressions.count])
        }
        for index in 0..<cases {
            var frame = frames[index % frames.count]
            let mutations = 1 + Int(generator.next() % 4)
            for _ in 0..<mutations {
                switch generator.next() % 3 {
                case 0: frame[Int(generator.next() % UInt64(frame.count))] = UInt8(truncatingIfNeeded: generator.next())
                case 1: frame.removeLast(Int(generator.next() % UInt64(frame.count)))
                default: frame.insert(UInt8(truncatingIfNeeded: generator.next()), at: Int(generator.next() % UInt64(frame.count + 1)))
                }
                if frame.isEmpty { frame = [0] }
            }
            // Half the cases get a correct checksum, so that the decoder past it is exercised too.
            if index % 2 == 0, frame.count > 4 {
                let crc = CRC32C.checksum(frame.dropLast(4))
                for byte in 0..<4 { frame[frame.count - 4 + byte] = UInt8(truncatingIfNeeded: crc >> (8 * byte)) }
            }
            do {
                _ = try UpdateCodec.decode(frame, layout: Self.layout)
            } catch {
                refused += 1
            }
        }
        #expect(refused > cases / 2)
    }
}
