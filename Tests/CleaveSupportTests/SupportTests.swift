import Foundation
import Testing

@testable import CleaveSupport

@Suite struct SeededGeneratorTests {
    @Test func streamIsSplitMix64() {
        // The first outputs of SplitMix64 seeded with 0, as published with the algorithm.
        var generator = SeededGenerator(seed: 0)
        #expect(generator.next() == 0xE220_A839_7B1D_CDAF)
        #expect(generator.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(generator.next() == 0x06C4_5D18_8009_454F)
    }

    @Test func uniformAndNormalStayInRange() {
        var generator = SeededGenerator(seed: 7)
        let uniforms = (0..<10_000).map { _ in generator.uniform() }
        #expect(uniforms.allSatisfy { $0 >= 0 && $0 < 1 })
        let normals = SampleStatistics((0..<10_000).map { _ in generator.normal() })
        #expect(abs(normals.mean) < 0.05)
        #expect(abs(normals.percentile(0.8413) - 1) < 0.1)
    }
}

@Suite struct StatisticsTests {
    @Test func medianAndPercentiles() {
        let odd = SampleStatistics([5, 1, 3])
        #expect(odd.median == 3)
        let even = SampleStatistics([4, 1, 3, 2])
        #expect(even.median == 2.5)
        #expect(even.mean == 2.5)
        let hundred = SampleStatistics((1...100).map(Double.init))
        #expect(hundred.percentile(0.95) == 95)
        #expect(hundred.percentile(0.99) == 99)
        #expect(hundred.percentile(0) == 1)
        #expect(hundred.percentile(1) == 100)
        #expect(SampleStatistics([Double]()).median.isNaN)
    }

    @Test func classificationTakesTheFirstLargest() {
        #expect(Classification.argmax([0, 5, 5]) == 1)
        #expect(Classification.argmax([Float]()) == nil)
        let (index, probability) = Classification.top([0, 0, 0, 0])
        #expect(index == 0)
        #expect(abs(probability - 0.25) < 1e-6)
    }

    @Test func durations() {
        #expect(Duration.milliseconds(1500).seconds == 1.5)
        #expect(Duration.microseconds(250).milliseconds == 0.25)
        #expect(Duration.seconds(fractional: 0.0125) == .microseconds(12500))
    }
}

@Suite struct ByteReaderTests {
    @Test func readsWhatTheWriterWrote() throws {
        var writer = ByteWriter()
        writer.u8(7)
        writer.integer(UInt32(0xDEAD_BEEF))
        writer.integer(Int64(-2))
        writer.float32(1.5)
        writer.varint(300)
        writer.append(contentsOf: [1, 2, 3])
        #expect(writer.bytes[1...4] == [0xEF, 0xBE, 0xAD, 0xDE])
        var reader = ByteReader(writer.bytes)
        #expect(try reader.integer(UInt8.self) == 7)
        #expect(try reader.integer(UInt32.self) == 0xDEAD_BEEF)
        #expect(try reader.integer(Int64.self) == -2)
        #expect(try reader.float32() == 1.5)
        #expect(try reader.varint() == 300)
        #expect(Array(try reader.take(3)) == [1, 2, 3])
        #expect(reader.remaining == 0)
    }

    @Test func refusesReadsPastTheEnd() {
        var reader = ByteReader([UInt8](repeating: 0, count: 6), end: 4)
        #expect(throws: ByteReadError.truncated(offset: 0, needed: 8, end: 4)) { try reader.integer(UInt64.self) }
        #expect(throws: ByteReadError.truncated(offset: 0, needed: 5, end: 4)) { try reader.take(5) }
        #expect(throws: ByteReadError.truncated(offset: 0, needed: -1, end: 4)) { try reader.take(-1) }
    }

    @Test func refusesMalformedVarints() {
        var overlong = ByteReader([0x80, 0x00])
        #expect(throws: ByteReadError.badVarint(offset: 0)) { try overlong.varint() }
        var tooWide = ByteReader([UInt8](repeating: 0xFF, count: 9) + [0x02])
        #expect(throws: ByteReadError.badVarint(offset: 0)) { try tooWide.varint() }
        var endless = ByteReader([UInt8](repeating: 0x80, count: 3))
        #expect(throws: ByteReadError.truncated(offset: 3, needed: 1, end: 3)) { try endless.varint() }
    }

    @Test func fuzzedInputNeverTraps() {
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<2000 {
            let bytes = (0..<Int(generator.next() % 24)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            var reader = ByteReader(bytes)
            while reader.remaining > 0 {
                switch generator.next() % 4 {
                case 0: _ = try? reader.varint()
                case 1: _ = try? reader.integer(UInt32.self)
                case 2: _ = try? reader.take(Int(generator.next() % 8))
                default: _ = try? reader.integer(UInt8.self)
                }
                if generator.next() % 16 == 0 { break }
            }
        }
    }
}

@Suite struct SystemCallTests {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-support-\(UUID().uuidString)").path

    @Test func writesAtomicallyAndReadsBack() throws {
        try SystemCall.makeDirectories("\(folder)/a/b")
        let file = "\(folder)/a/b/data.bin"
        try SystemCall.writeFileAtomically(file, [1, 2, 3, 4])
        #expect(try SystemCall.readFile(file) == [1, 2, 3, 4])
        #expect(SystemCall.isReadable(file))
        let mapped = try MappedFile(path: file)
        #expect(Array(mapped.buffer) == [1, 2, 3, 4])
        SystemCall.remove(file)
        #expect(!SystemCall.isReadable(file))
        try? FileManager.default.removeItem(atPath: folder)
    }

    @Test func failuresNameTheCallAndTheReason() {
        #expect(throws: SystemError("open /nonexistent/cleave", code: ENOENT)) { try SystemCall.readFile("/nonexistent/cleave") }
        let error = SystemError("open /nonexistent/cleave", code: ENOENT)
        #expect(error.description == "open /nonexistent/cleave failed: No such file or directory")
        #expect(throws: SystemError("map /tmp", code: 0, detail: "not a regular file")) { try MappedFile(path: "/tmp") }
        #expect(throws: SystemError.self) { try SystemCall.writeFileAtomically("/nonexistent/dir/file", [1]) }
    }
}

@Suite struct TextFormatTests {
    @Test func fixedRoundsLikePrintf() {
        let cases: [(Double, Int, String)] = [
            (3.14159, 2, "3.14"), (2.0, 0, "2"), (0.05, 1, "0.1"), (-1.26, 1, "-1.3"), (-0.001, 2, "0.00"), (1234.5, 1, "1234.5"),
            (0.999, 2, "1.00"), (7, 3, "7.000"), (98.765, 2, "98.77"), (.nan, 2, "nan"), (-.infinity, 1, "-inf"), (1e300, 1, "1e+300"),
        ]
        for (value, digits, expected) in cases {
            #expect(value.fixed(digits) == expected, "\(value) to \(digits) digits")
            if value.isFinite && value.magnitude < 1e15 && !(value < 0 && value > -0.005) {
                #expect(String(format: "%.\(digits)f", value) == expected, "printf agrees for \(value)")
            }
        }
    }

    @Test func alignmentPadsShortTextOnly() {
        #expect("ab".aligningRight(4) == "  ab")
        #expect("ab".aligningLeft(4) == "ab  ")
        #expect("abcdef".aligningRight(4) == "abcdef")
    }
}
