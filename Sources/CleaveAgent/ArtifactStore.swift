import CleaveProtocol
import CleaveSupport

/// The model artifacts an agent has verified, by SHA-256: in a cache folder on disk, or in
/// memory when there is no folder.
///
/// With a folder, artifacts survive restarts (an agent that restarts does not fetch them
/// again) and cost no memory until a model is loaded. Every read is verified against its
/// hash again, so a corrupted or edited cache file is refused, not run. When writing fails
/// (a full disk, a read-only card) the artifact is kept in memory instead and a warning says
/// why: nothing is lost.
struct ArtifactStore {
    /// The cache folder, or nil for memory only.
    let directory: String?
    private var inMemory: [String: [UInt8]] = [:]

    init(directory: String?) {
        self.directory = directory
    }

    /// Whether the artifact with this hash is available (a cache file is only checked for presence here).
    func contains(_ sha256: String) -> Bool {
        inMemory[sha256] != nil || path(sha256).map(SystemCall.isReadable) ?? false
    }

    /// Keeps verified `bytes`; returns a warning when they could not go to disk.
    mutating func put(_ sha256: String, _ bytes: [UInt8]) -> String? {
        guard let directory, let file = path(sha256) else {
            inMemory[sha256] = bytes
            return nil
        }
        do {
            try SystemCall.makeDirectories(directory)
            // A temporary file renamed into place: a crash never leaves half an artifact under its hash.
            try SystemCall.writeFileAtomically(file, bytes)
            return nil
        } catch {
            inMemory[sha256] = bytes
            return "cannot cache model \(sha256.prefix(12)) in \(directory) (\(error)); keeping it in memory"
        }
    }

    /// The artifact's bytes, verified against its hash.
    func bytes(_ sha256: String) throws -> [UInt8] {
        if let bytes = inMemory[sha256] { return bytes }
        guard let file = path(sha256) else { throw AgentError(description: "model \(sha256.prefix(12)) is not available") }
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile(file)
        } catch {
            throw AgentError(description: "cannot read cached model: \(error)")
        }
        let actual = SHA256.hex(bytes)
        guard actual == sha256 else {
            throw AgentError(description: "cached model \(file) is corrupt: its SHA-256 is \(actual); delete it to fetch it again")
        }
        return bytes
    }

    /// Forgets an artifact (a corrupt cache file is removed so that it is fetched again).
    mutating func remove(_ sha256: String) {
        inMemory[sha256] = nil
        if let file = path(sha256) { SystemCall.remove(file) }
    }

    private func path(_ sha256: String) -> String? {
        // Only well-formed hashes name files: a topic cannot smuggle a path in.
        guard let directory, sha256.count == 64, sha256.allSatisfy(\.isHexDigit) else { return nil }
        return "\(directory)/\(sha256).onnx"
    }
}
