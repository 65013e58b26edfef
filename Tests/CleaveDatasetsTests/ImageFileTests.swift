import CZlib
import CleaveTensor
import Foundation
import Testing

@testable import CleaveDatasets

@Suite struct ImageFileTests {
    let pixels: [UInt8] = (0..<(28 * 28)).map { UInt8(($0 * 37) % 256) }

    func temporary(_ bytes: [UInt8], suffix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cleave-image-\(UUID().uuidString)\(suffix)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A minimal PNG writer (8-bit gray or RGB, filters Sub and Paeth alternating) for fixtures.
    func png(width: Int, height: Int, channels: Int, samples: [UInt8]) -> [UInt8] {
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let typed = Array(type.utf8) + body
            let crc = UInt32(typed.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
            let length = UInt32(body.count)
            return [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: length >> UInt32($0)) } + typed
                + [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: crc >> UInt32($0)) }
        }
        let stride = width * channels
        var raw: [UInt8] = []
        for row in 0..<height {
            let filter: UInt8 = row % 2 == 0 ? 1 : 4
            raw.append(filter)
            for column in 0..<stride {
                let x = Int(samples[row * stride + column])
                let a = column >= channels ? Int(samples[row * stride + column - channels]) : 0
                let b = row > 0 ? Int(samples[(row - 1) * stride + column]) : 0
                let c = row > 0 && column >= channels ? Int(samples[(row - 1) * stride + column - channels]) : 0
                var predicted = a
                if filter == 4 {
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predicted = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                }
                raw.append(UInt8((x - predicted) & 0xFF))
            }
        }
        var compressedLength = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        _ = compressed.withUnsafeMutableBufferPointer { out in
            raw.withUnsafeBufferPointer { compress(out.baseAddress, &compressedLength, $0.baseAddress, uLong($0.count)) }
        }
        compressed.removeLast(compressed.count - Int(compressedLength))
        let header: [UInt8] =
            [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: width >> $0) } + [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: height >> $0) }
            + [8, channels == 1 ? 0 : 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", compressed) + chunk("IEND", [])
    }

    @Test func grayPNGAndPGMDecodeToTheSamePixels() throws {
        let fromPNG = try ImageFile.load(try temporary(png(width: 28, height: 28, channels: 1, samples: pixels), suffix: ".png"))
        let fromPGM = try ImageFile.load(try temporary(Array("P5\n# comment\n28 28\n255\n".utf8) + pixels, suffix: ".pgm"))
        let expected = pixels.map { Float($0) / 255 }
        #expect(fromPNG.scalars(as: Float.self) == expected)
        #expect(fromPGM.scalars(as: Float.self) == expected)
    }

    @Test func rgbPNGBecomesLuma() throws {
        let rgb = pixels.flatMap { [$0, $0, $0] }
        let image = try ImageFile.load(try temporary(png(width: 28, height: 28, channels: 3, samples: rgb), suffix: ".png"))
        #expect(image.scalars(as: Float.self) == pixels.map { Float($0) / 255 })
    }

    @Test func largerImagesAreResized() throws {
        let big = [UInt8](repeating: 200, count: 56 * 56)
        let image = try ImageFile.load(try temporary(Array("P5 56 56 255\n".utf8) + big, suffix: ".pgm"))
        #expect(image.shape == [1, 1, 28, 28])
        #expect(image.scalars(as: Float.self).allSatisfy { abs($0 - 200.0 / 255) < 1e-6 })
    }

    @Test func mutatedImagesNeverCrash() throws {
        let seeds = [
            png(width: 28, height: 28, channels: 1, samples: pixels), Array("P5 28 28 255\n".utf8) + pixels, Array("P2 2 2 255 1 2 3 4".utf8),
        ]
        var state: UInt64 = 99
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(state >> 33)
        }
        for round in 0..<3000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<(1 + next() % 3) {
                let position = next() % bytes.count
                if next() % 3 == 0 { bytes = Array(bytes.prefix(position + 1)) } else { bytes[position] = UInt8(truncatingIfNeeded: next()) }
            }
            let path = try temporary(bytes, suffix: ".img")
            _ = try? ImageFile.load(path)
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    @Test func badFilesNameTheProblem() throws {
        #expect(throws: DatasetError.self) { _ = try ImageFile.load(try temporary([1, 2, 3], suffix: ".png")) }
        do {
            _ = try ImageFile.load(try temporary(Array("P5 28 28 65535\n".utf8), suffix: ".pgm"))
        } catch let error as DatasetError {
            #expect(error.description.contains("maximum value 65535"))
        }
    }
}

@Suite struct FashionMNISTTests {
    @Test func loadsTheDebianPackage() throws {
        let test = try FashionMNIST(split: .test)
        #expect(test.count == 10_000)
        #expect(test.image(0).shape == [1, 1, 28, 28])
    }

    @Test func missingDatasetNamesThePackage() {
        do {
            _ = try FashionMNIST(split: .test, directory: "/nonexistent")
            Issue.record("a missing data set was accepted")
        } catch {
            #expect("\(error)".contains("dataset-fashion-mnist"))
        }
    }

    @Test func corruptIDXIsRejected() {
        #expect(throws: DatasetError.self) { _ = try IDX.read([0, 0, 8, 1, 0, 0, 0, 9, 1, 2], source: "short", expectedRank: 1) }
        #expect(throws: DatasetError.self) { _ = try IDX.read([1, 2, 3, 4], source: "magic", expectedRank: 1) }
    }
}
