import CZlib
import CleaveSupport
import CleaveTensor
import FoundationEssentials

/// Reads grayscale model inputs from PGM (P5/P2) and PNG files (8-bit gray, gray+alpha,
/// RGB or RGBA, not interlaced), converted to gray and resized to the model's input size.
public enum ImageFile {
    /// The image at `path` as a `[1, 1, height, width]` float32 tensor scaled to 0–1.
    ///
    /// - Throws: ``DatasetError`` naming the file and what is wrong with it.
    public static func load(_ path: String, height: Int = 28, width: Int = 28) throws -> Tensor {
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile(path)
        } catch {
            throw DatasetError(description: "\(path): cannot read: \(error.reason)")
        }
        let image: (width: Int, height: Int, gray: [UInt8])
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            image = try decodePNG(bytes, source: path)
        } else if bytes.starts(with: Array("P5".utf8)) || bytes.starts(with: Array("P2".utf8)) {
            image = try decodePGM(bytes, source: path)
        } else {
            throw DatasetError(description: "\(path): not a PNG or PGM image")
        }
        return resize(image, height: height, width: width)
    }

    /// Paths of the PNG and PGM files in `directory`, sorted.
    public static func list(_ directory: String) throws -> [String] {
        let names: [String]
        do {
            names = try SystemCall.listDirectory(directory)
        } catch {
            throw DatasetError(description: "\(directory): cannot list the folder: \(error.reason)")
        }
        let images = names.filter { [".png", ".pgm"].contains(where: $0.lowercased().hasSuffix) }.sorted()
        guard !images.isEmpty else { throw DatasetError(description: "\(directory): no .png or .pgm files") }
        return images.map { "\(directory)/\($0)" }
    }

    // MARK: - PGM

    static func decodePGM(_ bytes: [UInt8], source: String) throws -> (width: Int, height: Int, gray: [UInt8]) {
        var position = 2
        func token() throws -> Int {
            while position < bytes.count {
                if bytes[position] == UInt8(ascii: "#") {
                    while position < bytes.count && bytes[position] != 10 { position += 1 }
                } else if [9, 10, 13, 32].contains(bytes[position]) {
                    position += 1
                } else {
                    break
                }
            }
            let start = position
            while position < bytes.count, (48...57).contains(bytes[position]) { position += 1 }
            guard position > start, position - start < 9, let value = Int(String(decoding: bytes[start..<position], as: UTF8.self)) else {
                throw DatasetError(description: "\(source): malformed PGM header at byte \(start)")
            }
            return value
        }
        let width = try token()
        let height = try token()
        let maximum = try token()
        guard width > 0, height > 0, width * height <= 1 << 24 else {
            throw DatasetError(description: "\(source): PGM size \(width)×\(height) is not allowed")
        }
        guard (1...255).contains(maximum) else { throw DatasetError(description: "\(source): PGM maximum value \(maximum) is not supported (1–255)") }
        var gray: [UInt8]
        if bytes[1] == UInt8(ascii: "5") {
            position += 1
            guard bytes.count - position >= width * height else {
                throw DatasetError(
                    description: "\(source): PGM data has \(max(0, bytes.count - position)) bytes, \(width)×\(height) needs \(width * height)")
            }
            gray = Array(bytes[position..<(position + width * height)])
        } else {
            gray = try (0..<(width * height)).map { _ in UInt8(min(try token(), maximum)) }
        }
        if maximum != 255 { gray = gray.map { UInt8(min(255, Int($0) * 255 / maximum)) } }
        return (width, height, gray)
    }

    // MARK: - PNG

    static func decodePNG(_ bytes: [UInt8], source: String) throws -> (width: Int, height: Int, gray: [UInt8]) {
        func fail(_ reason: String) -> DatasetError { DatasetError(description: "\(source): \(reason)") }
        func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 << 8 | Int(bytes[at + $1]) } }
        guard bytes.count >= 8, bytes[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { throw fail("bad PNG signature") }
        var position = 8
        var width = 0
        var height = 0
        var colorType = -1
        var compressed: [UInt8] = []
        while position + 12 <= bytes.count {
            let length = u32(position)
            let type = String(decoding: bytes[(position + 4)..<(position + 8)], as: UTF8.self)
            guard length <= bytes.count - position - 12 else { throw fail("PNG chunk \(type) runs past the end of the file") }
            let body = Array(bytes[(position + 8)..<(position + 8 + length)])
            switch type {
            case "IHDR":
                guard length == 13 else { throw fail("PNG header has \(length) bytes, not 13") }
                width = (0..<4).reduce(0) { $0 << 8 | Int(body[$1]) }
                height = (4..<8).reduce(0) { $0 << 8 | Int(body[$1]) }
                guard body[8] == 8 else { throw fail("PNG bit depth \(body[8]) is not supported (8 is)") }
                colorType = Int(body[9])
                guard [0, 2, 4, 6].contains(colorType) else {
                    throw fail("PNG color type \(colorType) is not supported (gray, RGB, with or without alpha)")
                }
                guard body[12] == 0 else { throw fail("interlaced PNG is not supported") }
                guard width > 0, height > 0, width * height <= 1 << 24 else { throw fail("PNG size \(width)×\(height) is not allowed") }
            case "IDAT":
                compressed += body
            case "IEND":
                position = bytes.count
                continue
            default:
                break
            }
            position += 12 + length
        }
        guard colorType >= 0 else { throw fail("PNG has no header chunk") }
        let channels = [0: 1, 2: 3, 4: 2, 6: 4][colorType]!
        let stride = width * channels
        var raw = [UInt8](repeating: 0, count: height * (stride + 1))
        var rawLength = uLongf(raw.count)
        let status = raw.withUnsafeMutableBufferPointer { output in
            compressed.withUnsafeBufferPointer { input in
                uncompress(output.baseAddress, &rawLength, input.baseAddress, uLong(input.count))
            }
        }
        guard status == Z_OK, Int(rawLength) == raw.count else { throw fail("PNG image data is corrupt or truncated (zlib status \(status))") }
        var pixels = [UInt8](repeating: 0, count: height * stride)
        for row in 0..<height {
            let filter = raw[row * (stride + 1)]
            for column in 0..<stride {
                let x = Int(raw[row * (stride + 1) + 1 + column])
                let a = column >= channels ? Int(pixels[row * stride + column - channels]) : 0
                let b = row > 0 ? Int(pixels[(row - 1) * stride + column]) : 0
                let c = row > 0 && column >= channels ? Int(pixels[(row - 1) * stride + column - channels]) : 0
                let predicted: Int
                switch filter {
                case 0: predicted = 0
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predicted = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw fail("PNG row \(row) has unknown filter \(filter)")
                }
                pixels[row * stride + column] = UInt8((x + predicted) & 0xFF)
            }
        }
        let gray: [UInt8] = (0..<(width * height)).map { index in
            let base = index * channels
            if channels <= 2 { return pixels[base] }
            let luma = 0.299 * Double(pixels[base]) + 0.587 * Double(pixels[base + 1]) + 0.114 * Double(pixels[base + 2])
            return UInt8(min(255, luma.rounded()))
        }
        return (width, height, gray)
    }

    /// Bilinear resize to `height`×`width`, scaled to 0–1.
    static func resize(_ image: (width: Int, height: Int, gray: [UInt8]), height: Int, width: Int) -> Tensor {
        var values = [Float](repeating: 0, count: height * width)
        for y in 0..<height {
            let sy = min(max((Double(y) + 0.5) * Double(image.height) / Double(height) - 0.5, 0), Double(image.height - 1))
            let y0 = Int(sy)
            let y1 = min(y0 + 1, image.height - 1)
            let wy = sy - Double(y0)
            for x in 0..<width {
                let sx = min(max((Double(x) + 0.5) * Double(image.width) / Double(width) - 0.5, 0), Double(image.width - 1))
                let x0 = Int(sx)
                let x1 = min(x0 + 1, image.width - 1)
                let wx = sx - Double(x0)
                func at(_ yy: Int, _ xx: Int) -> Double { Double(image.gray[yy * image.width + xx]) }
                let top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
                let bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
                values[y * width + x] = Float((top * (1 - wy) + bottom * wy) / 255)
            }
        }
        return Tensor(shape: [1, 1, height, width], scalars: values)
    }
}
