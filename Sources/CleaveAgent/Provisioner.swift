import CleaveONNX
import CleaveProtocol
import CleaveSupport
import CleaveTensor
import FoundationEssentials

/// The agent's provisioning: assignment → verified artifacts → inference sessions and what
/// each mode costs on this device.
///
/// The head loads as soon as both artifacts are verified; the whole model loads on the first
/// local request (split serving never needs it in memory). Artifacts are refused unless their
/// SHA-256 is the one their topic names, and re-verified on every read from the cache.
struct Provisioner {
    /// What a received artifact did.
    enum Receipt: Equatable {
        /// Its bytes do not hash to the name it came under: refused.
        case refused(actualSHA256: String)
        /// Already held.
        case duplicate
        /// Verified and stored (with a warning when the disk refused it and memory holds it).
        case stored(warning: String?)
    }

    private(set) var assignment: Assignment?
    private(set) var headSession: InferenceSession?
    /// The head's patch plan when the assignment asks for one, and the memory its runs reuse.
    private(set) var headPatchPlan: PatchPlan?
    private let headWorkspace = PatchWorkspace()
    private var fullSession: InferenceSession?
    private var artifacts: ArtifactStore
    private let threads: Int
    private let profile: DeviceProfile

    init(configuration: AgentConfiguration) {
        artifacts = ArtifactStore(directory: configuration.modelCache)
        threads = configuration.threads ?? configuration.profile.cores
        profile = configuration.profile
        streamPatches = configuration.streamPatches != nil
    }

    /// Whether the head is loaded and the whole model verified: requests can be served.
    var isReady: Bool { headSession != nil && (assignment.map { artifacts.contains($0.full.sha256) } ?? false) }

    /// Artifacts of the assignment not held yet (to fetch, also after a reconnect).
    var missing: [String] {
        guard let assignment else { return [] }
        return [assignment.full.sha256, assignment.head.sha256].filter { !artifacts.contains($0) }
    }

    /// Takes a new assignment (dropping the sessions of the old one); false if it is the one held.
    mutating func accept(_ assignment: Assignment) -> Bool {
        guard assignment != self.assignment else { return false }
        self.assignment = assignment
        headSession = nil
        headPatchPlan = nil
        streamingPlan = nil
        fullSession = nil
        return true
    }

    /// Verifies and keeps an artifact that arrived for `claimed` (its hex SHA-256).
    mutating func receive(_ payload: [UInt8], claimed: String) -> Receipt {
        let actual = SHA256.hex(payload)
        guard actual == claimed else { return .refused(actualSHA256: actual) }
        guard !artifacts.contains(claimed) else { return .duplicate }
        return .stored(warning: artifacts.put(claimed, payload))
    }

    /// Loads the head once both artifacts are here; returns what each mode costs on this device
    /// (FLOPs × `scale` over the profile's GFLOP/s) when it did, nil while something is missing.
    /// Both artifacts are read and verified here, so a corrupt cache file is found (and fetched
    /// again) before the agent calls itself ready, not on the first local request.
    mutating func loadIfComplete(scale: Double) throws -> ModeCosts? {
        guard let assignment, headSession == nil, missing.isEmpty else { return nil }
        let head = try loadSession(assignment.head.sha256, role: "head model")
        let costs = try modeCosts(assignment, scale: scale)
        // One planner for both plans, made only when one is needed.
        var planner: PatchPlanner?
        func headPlanner() throws -> PatchPlanner {
            if let planner { return planner }
            let made = try PatchPlanner(session: head, inputTypes: [assignment.inputName: TensorType([1] + assignment.inputShape, .float32)])
            planner = made
            return made
        }
        if let patch = assignment.patch {
            // The coordinator chose the plan for this profile's budget; the same planner rebuilds it here.
            headPatchPlan = try headPlanner().plan(stageEnd: patch.stageEnd, grid: PatchGrid(rows: patch.rows, columns: patch.columns))
        }
        if streamPatches {
            let budget = assignment.patch?.budgetBytes ?? profile.activationMemoryKiB.map { $0 * 1024 } ?? Int.max
            do {
                if case .patched(let plan) = try headPlanner().choose(budget: budget, stageEnd: assignment.cutTensor) {
                    streamingPlan = plan
                }
            } catch {
                streamingRefusal = "\(error)"
            }
        }
        headSession = head
        // Counting the whole model's FLOPs decoded it (several megabytes, now freed): give them back.
        SystemCall.releaseFreedMemory()
        return costs
    }

    /// The whole model, loaded on first use. A corrupt cache file is dropped so that it is
    /// fetched again (``missing`` names it).
    mutating func full() throws -> InferenceSession {
        if let fullSession { return fullSession }
        guard let assignment else { throw AgentError(description: "no assignment yet") }
        let session = try loadSession(assignment.full.sha256, role: "full model")
        fullSession = session
        SystemCall.releaseFreedMemory()
        return session
    }

    /// The head's output for `input` at the assignment's cut (what a split request sends).
    func headFeatures(_ input: Tensor) throws -> Tensor {
        guard let assignment, let headSession else { throw AgentError(description: "no assignment yet") }
        let inputs = [assignment.inputName: input]
        // Patch by patch for one image when the plan says so (a batch runs layer by layer).
        let outputs =
            if let headPatchPlan, input.shape == [1] + assignment.inputShape {
                try headPatchPlan.run(inputs, pool: headSession.pool, workspace: headWorkspace)
            } else {
                try headSession.run(inputs)
            }
        guard let features = outputs[assignment.cutTensor] else {
            throw AgentError(description: "the assigned head model has no output '\(assignment.cutTensor)'")
        }
        return features
    }

    /// With ``AgentConfiguration/streamPatches``: the patch plan whose every patch makes a
    /// finished part of the cut tensor (its stage ends at the cut) within the activation budget,
    /// with the fewest multiply-adds — so that parts can be sent while the next patch runs.
    private(set) var streamingPlan: PatchPlan?
    /// Why there is no streaming plan, when streaming was asked for.
    private(set) var streamingRefusal: String?
    private let streamPatches: Bool

    /// Runs the head on one image patch by patch with ``streamingPlan`` and hands `onPart` each
    /// patch's part of the cut tensor (valid during the call) with its rows and columns.
    func headParts(_ input: Tensor, onPart: (Tensor, Range<Int>, Range<Int>) throws -> Void) throws {
        guard let assignment, let headSession, let plan = streamingPlan else {
            throw AgentError(description: "the head's patch plan does not end at the cut; its parts cannot be streamed")
        }
        _ = try plan.run([assignment.inputName: input], pool: headSession.pool, workspace: headWorkspace, onPatch: onPart)
    }

    private mutating func loadSession(_ sha256: String, role: String) throws -> InferenceSession {
        InferenceSession(model: try Model(serialized: Data(try verifiedBytes(sha256)), source: "\(role) \(sha256.prefix(12))"), threads: threads)
    }

    /// The artifact's bytes; a cache file that fails its check is removed, so that ``missing``
    /// names it and it is fetched again.
    private mutating func verifiedBytes(_ sha256: String) throws -> [UInt8] {
        do {
            return try artifacts.bytes(sha256)
        } catch {
            artifacts.remove(sha256)
            throw error
        }
    }

    /// Frame sizes are first guesses that the frames sent replace.
    private mutating func modeCosts(_ assignment: Assignment, scale: Double) throws -> ModeCosts {
        let types = [assignment.inputName: TensorType([1] + assignment.inputShape, .float32)]
        func flops(_ bytes: [UInt8]) throws -> Int {
            try ModelSummary(session: InferenceSession(model: try Model(serialized: Data(bytes)), threads: 1), types: types).flops
        }
        return ModeCosts.emulated(
            fullFLOPs: try flops(try verifiedBytes(assignment.full.sha256)), headFLOPs: try flops(try verifiedBytes(assignment.head.sha256)),
            profile: profile, scale: scale,
            splitBytes: 40 + assignment.cutShape.reduce(1, *), offloadBytes: 40 + assignment.inputShape.reduce(1, *))
    }
}
