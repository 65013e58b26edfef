/// The MQTT topic scheme shared by agents and coordinators (version 1).
public enum Topics {
    /// Prefix of every Cleave topic.
    public static let prefix = "cleave/v1"

    /// Retained JSON ``DeviceState`` of a device; its will flips it to offline.
    public static func deviceState(_ device: String) -> String { "\(prefix)/devices/\(device)/state" }
    /// Coordinator → device commands (retained JSON ``ControlMessage``).
    public static func deviceControl(_ device: String) -> String { "\(prefix)/devices/\(device)/control" }
    /// Where a device's results arrive (the MQTT v5 response topic of its requests).
    public static func results(_ device: String) -> String { "\(prefix)/devices/\(device)/results" }
    /// Device → coordinator feature frames.
    public static func infer(_ device: String) -> String { "\(prefix)/infer/\(device)" }
    /// Retained model artifact, addressed by the hex SHA-256 of its bytes.
    public static func model(_ sha256: String) -> String { "\(prefix)/models/\(sha256)" }

    /// Every device's state.
    public static let allDeviceStates = "\(prefix)/devices/+/state"
    /// Inference frames, shared among all coordinators so that adding one scales out.
    public static let sharedInfer = "$share/coordinators/\(prefix)/infer/+"

    /// The device id in a topic of the form `…/infer/{id}` or `…/devices/{id}/…`.
    public static func deviceID(in topic: String) -> String? {
        let parts = topic.split(separator: "/").map(String.init)
        guard parts.count >= 4, parts[0] == "cleave", parts[1] == "v1" else { return nil }
        switch parts[2] {
        case "infer": return parts.count == 4 ? parts[3] : nil
        case "devices": return parts[3]
        default: return nil
        }
    }

    /// MQTT v5 user property naming what a frame carries: `split` (head features) or `offload` (the input).
    public static let modeProperty = "mode"
}
