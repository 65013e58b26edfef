import CleaveSupport
import FoundationEssentials

/// `manifest.json` of a split model folder: the three ONNX files by hash, the
/// tensor shapes agents and coordinators must agree on, and how the model was made.
public struct ModelManifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        /// File name inside the folder.
        public var path: String
        /// Hex SHA-256 of its bytes.
        public var sha256: String

        public init(path: String, sha256: String) {
            self.path = path
            self.sha256 = sha256
        }
    }

    public var name: String
    /// Model input name and per-sample shape (without the batch).
    public var inputName: String
    public var inputShape: [Int]
    /// Cut tensor and its per-sample shape.
    public var cutTensor: String
    public var cutShape: [Int]
    public var full: File
    public var head: File
    public var tail: File
    /// Recommended frame codec and zstd level.
    public var codec: String
    public var zstdLevel: Int?
    /// Pixel scaling the model expects: input = pixel / 255.
    public var normalization: String
    /// Test accuracy per codec, as measured when the model was made.
    public var accuracy: [String: Double]
    /// The command and seed that made it.
    public var command: String
    public var seed: UInt64
    /// Mean frame size per codec on the test set, in bytes (header and CRC included).
    public var frameBytes: [String: Double]?
    /// Share of the full model's multiply-accumulates that the head computes (0–1).
    public var headMultiplyAddShare: Double?

    enum CodingKeys: String, CodingKey {
        case name, full, head, tail, codec, normalization, accuracy, command, seed
        case inputName = "input_name"
        case inputShape = "input_shape"
        case cutTensor = "cut_tensor"
        case cutShape = "cut_shape"
        case zstdLevel = "zstd_level"
        case frameBytes = "frame_bytes"
        case headMultiplyAddShare = "head_multiply_add_share"
    }

    public init(
        name: String, inputName: String, inputShape: [Int], cutTensor: String, cutShape: [Int], full: File, head: File, tail: File,
        codec: String, zstdLevel: Int?, normalization: String, accuracy: [String: Double], command: String, seed: UInt64
    ) {
        self.name = name
        self.inputName = inputName
        self.inputShape = inputShape
        self.cutTensor = cutTensor
        self.cutShape = cutShape
        self.full = full
        self.head = head
        self.tail = tail
        self.codec = codec
        self.zstdLevel = zstdLevel
        self.normalization = normalization
        self.accuracy = accuracy
        self.command = command
        self.seed = seed
    }
}

/// A model folder read from disk with every file's hash checked.
public struct ModelBundle: Sendable {
    public let manifest: ModelManifest
    public let full: [UInt8]
    public let head: [UInt8]
    public let tail: [UInt8]

    /// Reads `directory/manifest.json` and the files it names, refusing any whose SHA-256 differs.
    public init(directory: String) throws {
        let manifestPath = "\(directory)/manifest.json"
        guard let data = try? SystemCall.readFile(manifestPath) else {
            throw ProfileError(description: "\(manifestPath) is missing: make a model folder with `cleave train fmnist --out \(directory)`")
        }
        do {
            manifest = try JSONDecoder().decode(ModelManifest.self, from: Data(data))
        } catch {
            throw ProfileError(description: "\(manifestPath): \(error)")
        }
        func load(_ file: ModelManifest.File) throws -> [UInt8] {
            let path = "\(directory)/\(file.path)"
            guard let bytes = try? SystemCall.readFile(path) else { throw ProfileError(description: "\(path) is missing") }
            let actual = SHA256.hex(bytes)
            guard actual == file.sha256 else {
                throw ProfileError(description: "\(path): SHA-256 is \(actual), the manifest says \(file.sha256); refusing to use it")
            }
            return bytes
        }
        full = try load(manifest.full)
        head = try load(manifest.head)
        tail = try load(manifest.tail)
    }
}
