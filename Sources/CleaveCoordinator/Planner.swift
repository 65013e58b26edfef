import CleaveONNX
import CleaveProtocol
import CleaveTensor
import Foundation
import Synchronization

/// Decides what each device runs: its profile (and what it offers) in, its assignment out.
///
/// The one place where per-device choices are made — the cut and codec today; patch plans,
/// LLM shards and federated roles as they come. A device that cannot be served is refused
/// with a reason, which the coordinator logs and sends instead of an assignment.
public protocol Planner: Sendable {
    /// The assignment for `device`, or a ``PlanningError`` saying why there is none.
    func assignment(for device: DeviceState) throws(PlanningError) -> Assignment
}

/// Why a device gets no assignment.
public struct PlanningError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// Split inference of one model bundle: every device runs the bundle's head with its cut and
/// codec, layer by layer when its profile's activation budget allows (or sets none), else patch
/// by patch on the plan that fits with the fewest extra multiply-adds. A device that announces no
/// profile is refused (the plan is made for a profile), and so is one whose budget no plan meets.
public struct SplitPlanner: Planner {
    /// The assignment every profile gets before its head plan is chosen.
    public let base: Assignment
    private let heads: HeadPlans

    /// A planner for `bundle`; an unknown codec in its manifest, or a head the runtime cannot
    /// plan, is refused here, not on the devices.
    public init(bundle: ModelBundle) throws {
        let manifest = bundle.manifest
        base = Assignment(
            model: manifest.name, full: ArtifactReference(sha256: manifest.full.sha256, bytes: bundle.full.count),
            head: ArtifactReference(sha256: manifest.head.sha256, bytes: bundle.head.count), inputName: manifest.inputName,
            inputShape: manifest.inputShape, cutTensor: manifest.cutTensor, cutShape: manifest.cutShape,
            codec: try CodecName(validating: manifest.codec), zstdLevel: manifest.zstdLevel)
        let head = InferenceSession(model: try Model(serialized: Data(bundle.head), source: "head of \(manifest.name)"), threads: 1)
        heads = HeadPlans(
            planner: try PatchPlanner(session: head, inputTypes: [manifest.inputName: TensorType([1] + manifest.inputShape, .float32)]))
    }

    public func assignment(for device: DeviceState) throws(PlanningError) -> Assignment {
        guard let profile = device.profile else { throw PlanningError("device \(device.id) announced no profile") }
        guard let kib = profile.activationMemoryKiB else { return base }
        var assignment = base
        do {
            assignment.patch = try heads.patch(forBudget: kib * 1024)
        } catch {
            throw PlanningError("device \(device.id) (\(profile.name)): the head cannot run in its activation budget: \(error)")
        }
        return assignment
    }
}

/// The head's patch plans by budget, each chosen once (choosing tries every stage end and grid).
final class HeadPlans: Sendable {
    private let planner: PatchPlanner
    private let chosen = Mutex<[Int: Result<PatchAssignment?, PatchPlanError>]>([:])

    init(planner: PatchPlanner) { self.planner = planner }

    /// `nil` when layer by layer fits in `budget` bytes.
    func patch(forBudget budget: Int) throws(PatchPlanError) -> PatchAssignment? {
        if let known = chosen.withLock({ $0[budget] }) { return try known.get() }
        let result: Result<PatchAssignment?, PatchPlanError>
        do {
            switch try planner.choose(budget: budget) {
            case .layerByLayer: result = .success(nil)
            case .patched(let plan):
                result = .success(
                    PatchAssignment(
                        stageEnd: plan.stageEnd, rows: plan.grid.rows, columns: plan.grid.columns, peakBytes: plan.peakBytes, budgetBytes: budget,
                        extraMultiplyAddShare: plan.extraMultiplyAddShare))
            }
        } catch let error as PatchPlanError {
            result = .failure(error)
        } catch {
            result = .failure(PatchPlanError(reason: .notSpatial, description: "\(error)"))
        }
        chosen.withLock { $0[budget] = result }
        return try result.get()
    }
}
