import CleaveSupport
import Foundation
import Testing

@testable import CleaveNetem

/// 100,000 edits of the shipped scenarios and scenarios assembled from hostile fields: each
/// parses or gives a `NetemError` (or Yams' own error), never a trap.
@Suite struct ScenarioFuzzTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path

    @Test func fuzzedScenariosNeverTrap() throws {
        let shipped = try ["broker-outage", "commute", "mixed-fleet", "rural-nbiot", "wifi-congestion"].map {
            Array(String(decoding: try SystemCall.readFile("\(Self.repository)/scenarios/\($0).yaml"), as: UTF8.self).utf8)
        }
        let alphabet = Array("ab:#-[]{},'\" \n\t|&*!%@0123456789.smkbit_".utf8)
        let values = [
            "0s", "-1s", "1e400s", "99999999999999999999ms", "100mbit", "0kbit", "-5mbit", "nan", "1%", "150%", "refuse", "true", "[]", "{}", "~",
        ]
        let fields = ["at", "rate", "latency", "jitter", "loss", "down", "up", "burst", "trace", "duration", "seed", "uplink_rate"]
        var generator = SeededGenerator(seed: 91)
        var parsed = 0
        for round in 0..<100_000 {
            var bytes = shipped[round % shipped.count]
            if round % 2 == 0 {
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    let at = Int(generator.next() % UInt64(bytes.count))
                    switch generator.next() % 3 {
                    case 0: bytes.remove(at: at)
                    case 1: bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: at)
                    default: bytes[at] = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    }
                }
            } else {
                var text = "name: fuzz\nduration: \(values[Int(generator.next() % UInt64(values.count))])\nlinks:\n  default:\n"
                for _ in 0..<(1 + Int(generator.next() % 4)) {
                    text += "    - at: \(values[Int(generator.next() % UInt64(values.count))])\n"
                    for _ in 0..<Int(generator.next() % 3) {
                        text +=
                            "      \(fields[Int(generator.next() % UInt64(fields.count))]): \(values[Int(generator.next() % UInt64(values.count))])\n"
                    }
                }
                bytes = Array(text.utf8)
            }
            if (try? Scenario.parse(String(decoding: bytes, as: UTF8.self), source: "fuzz.yaml", directory: "/nonexistent")) != nil { parsed += 1 }
        }
        #expect(parsed > 0 && parsed < 100_000, "\(parsed) parsed")
    }
}
