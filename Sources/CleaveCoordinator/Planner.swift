import CleaveProtocol

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
/// codec. A device that announces no profile is refused (the plan is made for a profile).
public struct SplitPlanner: Planner {
    /// The assignment every profile gets.
    public let base: Assignment

    /// A planner for `bundle`; an unknown codec in its manifest is refused here, not on the devices.
    public init(bundle: ModelBundle) throws {
        let manifest = bundle.manifest
        base = Assignment(
            model: manifest.name, full: ArtifactReference(sha256: manifest.full.sha256, bytes: bundle.full.count),
            head: ArtifactReference(sha256: manifest.head.sha256, bytes: bundle.head.count), inputName: manifest.inputName,
            inputShape: manifest.inputShape, cutTensor: manifest.cutTensor, cutShape: manifest.cutShape,
            codec: try CodecName(validating: manifest.codec), zstdLevel: manifest.zstdLevel)
    }

    public func assignment(for device: DeviceState) throws(PlanningError) -> Assignment {
        guard device.profile != nil else { throw PlanningError("device \(device.id) announced no profile") }
        return base
    }
}
