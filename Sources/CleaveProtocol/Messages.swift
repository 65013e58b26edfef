/// How a device serves a request.
public enum InferenceMode: String, Codable, Sendable, CaseIterable {
    /// The whole model on the device; nothing is sent.
    case local
    /// The head on the device, the bottleneck frame to the coordinator, the tail there.
    case split
    /// The (compressed) input to the coordinator, the whole model there.
    case offload
}

/// The retained state a device publishes about itself.
public struct DeviceState: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case online, offline
    }

    /// Protocol version of the sender.
    public var version: Int
    public var id: String
    public var status: Status
    /// The device profile it runs with (absent in the offline will).
    public var profile: DeviceProfile?
    /// A random value drawn by each agent process: the coordinator copies it into the control
    /// messages it sends the device, and an agent pinned to the fleet key takes only those with
    /// its own, so that a recorded control message from an earlier start is refused without
    /// trusting anybody's clock.
    public var nonce: String?

    public init(id: String, status: Status, profile: DeviceProfile?, nonce: String? = nil, version: Int = 1) {
        self.version = version
        self.id = id
        self.status = status
        self.profile = profile
        self.nonce = nonce
    }
}

/// A model artifact named by content.
public struct ArtifactReference: Codable, Sendable, Equatable {
    /// Hex SHA-256 of the ONNX file.
    public var sha256: String
    /// Size, in bytes.
    public var bytes: Int

    public init(sha256: String, bytes: Int) {
        self.sha256 = sha256
        self.bytes = bytes
    }
}

/// The frame codecs an assignment can name. Decoding an assignment with any other name fails
/// (an agent must not guess a codec the coordinator did not mean).
public enum CodecName: String, Codable, Sendable, CaseIterable {
    case float32, float16, uint8, int4

    /// The codec called `name`, or an error that lists the known ones.
    public init(validating name: String) throws {
        guard let codec = CodecName(rawValue: name) else {
            throw ProtocolError("unknown frame codec '\(name)'; known: \(CodecName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = codec
    }
}

/// A protocol message or manifest that cannot be used as it is.
public struct ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// What a coordinator asks a device to run.
public struct Assignment: Codable, Sendable, Equatable {
    /// Human-readable model name.
    public var model: String
    /// The whole model (local mode) and its head (split mode).
    public var full: ArtifactReference
    public var head: ArtifactReference
    /// Name of the model input and its shape for one sample.
    public var inputName: String
    public var inputShape: [Int]
    /// The cut tensor and its shape for one sample.
    public var cutTensor: String
    public var cutShape: [Int]
    /// Frame codec and zstd level (nil: none) for split frames.
    public var codec: CodecName
    public var zstdLevel: Int?
    /// How the device runs the head: patch by patch as described, or layer by layer (`nil`).
    public var patch: PatchAssignment?

    public init(
        model: String, full: ArtifactReference, head: ArtifactReference, inputName: String, inputShape: [Int], cutTensor: String,
        cutShape: [Int], codec: CodecName, zstdLevel: Int?, patch: PatchAssignment? = nil
    ) {
        self.model = model
        self.full = full
        self.head = head
        self.inputName = inputName
        self.inputShape = inputShape
        self.cutTensor = cutTensor
        self.cutShape = cutShape
        self.codec = codec
        self.zstdLevel = zstdLevel
        self.patch = patch
    }
}

/// A patch plan for a device's head, chosen by the coordinator for the device's activation
/// budget: the agent rebuilds it from the stage end and grid, and the numbers say what the
/// coordinator planned (the agent logs both).
public struct PatchAssignment: Codable, Sendable, Equatable {
    /// The tensor of the head's executed graph where the patch stage ends.
    public var stageEnd: String
    /// Grid rows and columns over that tensor.
    public var rows: Int
    public var columns: Int
    /// Planned peak activation memory, in bytes, and the budget it was planned for.
    public var peakBytes: Int
    public var budgetBytes: Int
    /// Extra multiply-adds of the halos, as a share of the head's (0.1 = 10%).
    public var extraMultiplyAddShare: Double

    public init(stageEnd: String, rows: Int, columns: Int, peakBytes: Int, budgetBytes: Int, extraMultiplyAddShare: Double) {
        self.stageEnd = stageEnd
        self.rows = rows
        self.columns = columns
        self.peakBytes = peakBytes
        self.budgetBytes = budgetBytes
        self.extraMultiplyAddShare = extraMultiplyAddShare
    }
}

/// Coordinator → device command.
public struct ControlMessage: Codable, Sendable, Equatable {
    public var version: Int
    public var assignment: Assignment?
    /// The nonce of the device state it answers (``DeviceState/nonce``).
    public var nonce: String?

    public init(assignment: Assignment?, nonce: String? = nil, version: Int = 1) {
        self.version = version
        self.assignment = assignment
        self.nonce = nonce
    }
}

/// The answer to one request.
public struct InferenceResult: Codable, Sendable, Equatable {
    public var requestID: UInt64
    /// Predicted class, when the request succeeded.
    public var prediction: Int?
    /// Softmax probability of the predicted class.
    public var confidence: Float?
    /// Why the coordinator gave no prediction, when it did not.
    public var rejection: Rejection?
    /// Which coordinator answered.
    public var coordinator: String
    /// How many requests the tail ran together with this one.
    public var batchSize: Int

    public init(requestID: UInt64, prediction: Int?, confidence: Float?, rejection: Rejection? = nil, coordinator: String, batchSize: Int) {
        self.requestID = requestID
        self.prediction = prediction
        self.confidence = confidence
        self.rejection = rejection
        self.coordinator = coordinator
        self.batchSize = batchSize
    }
}

/// Why a coordinator answered a request without a prediction: a reason a program can act on
/// (`reason`, stable on the wire) and what a person needs to fix it (`message`).
public struct Rejection: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Codable, Sendable {
        /// The frame did not decode: truncated, a CRC mismatch, invalid fields.
        case malformedFrame = "malformed-frame"
        /// The frame is larger than the coordinator accepts.
        case frameTooLarge = "frame-too-large"
        /// The frame's model context names weights this coordinator does not serve.
        case wrongModel = "wrong-model"
        /// The frame's request id differs from the message's correlation data.
        case mismatchedRequest = "mismatched-request"
        /// The frame was valid and the tail failed on it.
        case computationFailed = "computation-failed"
        /// The coordinator is serving as many of this device's frames as it allows; the frame
        /// was not looked at (compute it locally or send it later).
        case busy
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason.rawValue): \(message)" }
}

/// What a tensor-parallel shard worker (`cleave llm worker --broker …`) tells coordinators,
/// retained on ``Topic/llmWorker(id:)``; its will publishes the same with `online` false.
public struct LLMWorkerAnnouncement: Codable, Sendable, Equatable {
    public var id: String
    /// Where coordinators connect, `HOST:PORT`.
    public var endpoint: String
    /// Relative speed for the shard plan (a profile's GFLOP/s, or 1).
    public var speed: Double
    /// Bytes the worker can give its slice (its memory budget), if it has a limit.
    public var memoryBytes: Int?
    public var online: Bool

    public init(id: String, endpoint: String, speed: Double, memoryBytes: Int?, online: Bool) {
        self.id = id
        self.endpoint = endpoint
        self.speed = speed
        self.memoryBytes = memoryBytes
        self.online = online
    }
}
