import CleaveSupport
import CleaveTensor
import Testing

@testable import CleaveCodec

/// Frames that carry one part of a request's tensor (a patch's rows and columns), and their
/// assembly into the whole tensor.
@Suite struct PartFrameTests {
    /// A [1, 3, 5, 7] tensor and the parts of a 2x3 grid over its 5x7 plane (uneven edges).
    static let whole = Tensor(shape: [1, 3, 5, 7], scalars: (0..<105).map { Float(($0 * 37) % 101) / 10 - 5 })
    static let rows = [0..<3, 3..<5]
    static let columns = [0..<2, 2..<5, 5..<7]

    static func part(_ rows: Range<Int>, _ columns: Range<Int>) -> Tensor {
        let values = whole.scalars(as: Float.self)
        var part: [Float] = []
        for channel in 0..<3 {
            for row in rows { for column in columns { part.append(values[(channel * 5 + row) * 7 + column]) } }
        }
        return Tensor(shape: [1, 3, rows.count, columns.count], scalars: part)
    }

    static func frames(codec: FrameCodec = .float32, requestID: UInt64 = 9) -> [[UInt8]] {
        rows.flatMap { rows in
            columns.map { columns in
                let region = FrameRegion(top: rows.lowerBound, left: columns.lowerBound, height: rows.count, width: columns.count, parts: 6)
                return BottleneckCodec.encode(part(rows, columns), requestID: requestID, options: FrameOptions(codec: codec, region: region))
            }
        }
    }

    @Test(arguments: FrameCodec.allCases)
    func aPartRoundTripsWithItsRegion(codec: FrameCodec) throws {
        let frame = BottleneckCodec.encode(
            Self.part(3..<5, 2..<5), requestID: 12,
            options: FrameOptions(codec: codec, region: FrameRegion(top: 3, left: 2, height: 2, width: 3, parts: 6)))
        let decoded = try BottleneckCodec.decode(frame, expectedShape: [1, 3, 5, 7])
        #expect(decoded.region == FrameRegion(top: 3, left: 2, height: 2, width: 3, parts: 6))
        #expect(decoded.tensor.shape == [1, 3, 2, 3])
        let error = zip(decoded.tensor.scalars(as: Float.self), Self.part(3..<5, 2..<5).scalars(as: Float.self)).map { abs($0 - $1) }.max()!
        #expect(error <= (codec == .float32 ? 0 : 1.0))
        #expect(try BottleneckCodec.decode(BottleneckCodec.encode(Self.whole, requestID: 1), expectedShape: [1, 3, 5, 7]).region == nil)
    }

    @Test func regionsOutsideTheTensorAreRefused() throws {
        func frame(_ region: FrameRegion) -> [UInt8] {
            BottleneckCodec.encode(
                Tensor(shape: [1, 3, region.height, region.width], scalars: [Float](repeating: 1, count: 3 * region.height * region.width)),
                requestID: 1, options: FrameOptions(codec: .uint8, region: region))
        }
        let cases: [(FrameRegion, String)] = [
            (FrameRegion(top: 4, left: 0, height: 2, width: 7, parts: 2), "region height is 2, the limit is 1"),
            (FrameRegion(top: 0, left: 7, height: 1, width: 1, parts: 2), "region left is 7, the limit is 6"),
            (FrameRegion(top: 0, left: 0, height: 1, width: 1, parts: 36), "part count is 36, the limit is 35"),
        ]
        for (region, message) in cases {
            #expect(throws: FrameError.self) { _ = try BottleneckCodec.decode(frame(region), expectedShape: [1, 3, 5, 7]) }
            do {
                _ = try BottleneckCodec.decode(frame(region), expectedShape: [1, 3, 5, 7])
            } catch {
                #expect(error.description == message)
            }
        }
        let valid = frame(FrameRegion(top: 0, left: 0, height: 1, width: 1, parts: 2))
        do {
            _ = try BottleneckCodec.decode(valid, expectedShape: [3, 35])
            Issue.record("a part of a rank-2 tensor was accepted")
        } catch {
            #expect(error.description.contains("a part needs a rank-4 (NCHW) tensor"))
        }
    }

    @Test func partsAssembleInAnyOrderAndResendsAreIgnored() throws {
        var generator = SeededGenerator(seed: 5)
        for _ in 0..<20 {
            var frames = Self.frames()
            frames.shuffle(using: &generator)
            var assembly = PartAssembly(shape: [1, 3, 5, 7], parts: 6)
            for (index, frame) in frames.enumerated() {
                #expect(!assembly.isComplete)
                #expect(try assembly.add(BottleneckCodec.decode(frame, expectedShape: [1, 3, 5, 7])))
                if index == 2 {
                    // A retry sends every part again: those already in change nothing.
                    #expect(try !assembly.add(BottleneckCodec.decode(frames[0], expectedShape: [1, 3, 5, 7])))
                }
            }
            #expect(assembly.isComplete && assembly.receivedParts == 6)
            #expect(assembly.tensor.scalars(as: Float.self) == Self.whole.scalars(as: Float.self))
        }
    }

    @Test func partsThatDoNotFitAreRefused() throws {
        let frames = Self.frames()
        var assembly = PartAssembly(shape: [1, 3, 5, 7], parts: 6)
        try assembly.add(BottleneckCodec.decode(frames[0], expectedShape: [1, 3, 5, 7]))
        let overlapping = BottleneckCodec.encode(
            Self.part(1..<3, 1..<3), requestID: 9,
            options: FrameOptions(codec: .float32, region: FrameRegion(top: 1, left: 1, height: 2, width: 2, parts: 6)))
        let otherCount = BottleneckCodec.encode(
            Self.part(3..<5, 5..<7), requestID: 9,
            options: FrameOptions(codec: .float32, region: FrameRegion(top: 3, left: 5, height: 2, width: 2, parts: 4)))
        let whole = BottleneckCodec.encode(Self.whole, requestID: 9)
        let cases: [([UInt8], String)] = [
            (overlapping, "overlaps an earlier part at row 1, column 1"),
            (otherCount, "the part says the request has 4 parts, an earlier part said 6"),
            (whole, "the frame is not a part"),
        ]
        for (frame, message) in cases {
            do {
                try assembly.add(BottleneckCodec.decode(frame, expectedShape: [1, 3, 5, 7]))
                Issue.record("accepted a part that does not fit: \(message)")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
        #expect(assembly.receivedParts == 1 && !assembly.isComplete)
        // Six parts that leave a gap (one part twice the size of another's slot) never complete.
        var gappy = PartAssembly(shape: [1, 3, 5, 7], parts: 2)
        for (rows, columns) in [(0..<5, 0..<3), (0..<5, 4..<7)] {
            let region = FrameRegion(top: rows.lowerBound, left: columns.lowerBound, height: rows.count, width: columns.count, parts: 2)
            try gappy.add(
                BottleneckCodec.decode(
                    BottleneckCodec.encode(Self.part(rows, columns), requestID: 9, options: FrameOptions(codec: .float32, region: region)),
                    expectedShape: [1, 3, 5, 7]))
        }
        #expect(gappy.receivedParts == 2 && !gappy.isComplete)
    }
}
