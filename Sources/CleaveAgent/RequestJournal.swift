import CleaveProtocol
import CleaveSupport
import FoundationEssentials

/// The agent's optional on-disk record of remote requests without an answer (`--queue-dir`):
/// one file per request, written (with `fsync`) before the request is published and removed
/// once it is resolved — answered, computed locally, or failed for the caller. What a crash
/// (`kill -9`, a power cut) leaves in the folder is sent again by the next process under the
/// same folder, and its answers are appended to `answers.jsonl` there, so that a request made
/// before a crash is still answered once. Without a journal a crash loses the requests in
/// flight (the application that made them is gone too); the coordinator's result cache and the
/// MQTT session keep nothing for a process that no longer exists.
struct RequestJournal: Sendable {
    let directory: String

    /// What a journal file holds: the request's MQTT messages (one frame, or its parts).
    struct Entry: Codable, Sendable {
        struct Message: Codable, Sendable {
            var topic: String
            var payload: Data
            var responseTopic: String?
            var correlationData: Data?
            var userProperties: [String: String]
        }

        var requestID: UInt64
        var messages: [Message]

        var mqttMessages: [MQTTMessage] {
            messages.map {
                MQTTMessage(
                    topic: $0.topic, payload: [UInt8]($0.payload), qos: 1, responseTopic: $0.responseTopic,
                    correlationData: $0.correlationData.map { [UInt8]($0) }, userProperties: $0.userProperties)
            }
        }
    }

    /// A recovered request's outcome, one JSON line in `answers.jsonl`.
    struct Answer: Codable, Sendable {
        var requestID: UInt64
        var prediction: Int?
        var confidence: Float?
        var error: String?
    }

    /// A journal in `directory` (made if missing).
    init(directory: String) throws {
        try SystemCall.makeDirectories(directory)
        self.directory = directory
    }

    private func path(_ requestID: UInt64) -> String { "\(directory)/\(requestID).request" }

    /// Writes the request's file; a failure (a full disk) is returned for the caller to log:
    /// the request still goes out, it is only not protected against a crash.
    func record(_ requestID: UInt64, messages: [MQTTMessage]) -> SystemError? {
        let entry = Entry(
            requestID: requestID,
            messages: messages.map {
                Entry.Message(
                    topic: $0.topic, payload: Data($0.payload), responseTopic: $0.responseTopic, correlationData: $0.correlationData.map { Data($0) },
                    userProperties: $0.userProperties)
            })
        guard let bytes = try? JSONEncoder().encode(entry) else { return nil }
        do {
            try SystemCall.writeFileAtomically(path(requestID), [UInt8](bytes))
            return nil
        } catch {
            return error
        }
    }

    func remove(_ requestID: UInt64) { SystemCall.remove(path(requestID)) }

    /// The requests a previous process left, oldest id first; unreadable files are skipped
    /// (and named, for the log).
    func pending() -> (entries: [Entry], unreadable: [String]) {
        guard let names = try? SystemCall.listDirectory(directory) else { return ([], []) }
        var entries: [Entry] = []
        var unreadable: [String] = []
        for name in names where name.hasSuffix(".request") {
            guard let bytes = try? SystemCall.readFile("\(directory)/\(name)"),
                let entry = try? JSONDecoder().decode(Entry.self, from: Data(bytes)), "\(entry.requestID).request" == name
            else {
                unreadable.append(name)
                continue
            }
            entries.append(entry)
        }
        return (entries.sorted { $0.requestID < $1.requestID }, unreadable)
    }

    /// Appends a recovered request's outcome to `answers.jsonl`.
    func append(_ answer: Answer) throws {
        guard var line = try? JSONEncoder().encode(answer) else { return }
        line.append(UInt8(ascii: "\n"))
        try SystemCall.append("\(directory)/answers.jsonl", [UInt8](line))
    }
}
