import CleaveSupport
import Foundation
import Testing

@testable import CleaveProtocol

@Suite struct ProtocolTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL.path

    @Test func sha256KnownVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func shippedProfilesLoad() throws {
        let folder = "\(Self.repository)/devices"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 6)
        for file in files {
            let profile = try DeviceProfile.load("\(folder)/\(file)")
            #expect(profile.memoryBudgetMiB <= profile.ramMiB)
        }
    }

    @Test func malformedProfileNamesFileLineAndField() {
        let yaml = "name: x\nboard: y\ncores: four\nclock_mhz: 1000\nram_mib: 512\nmemory_budget_mib: 128\ngflops: 1\ngflops_source: s\nlinks: []\n"
        do {
            _ = try DeviceProfile.parse(yaml, source: "bad.yaml")
            Issue.record("accepted a non-numeric core count")
        } catch {
            let text = "\(error)"
            #expect(text.contains("bad.yaml"))
            #expect(text.contains("line 3"))
            #expect(text.contains("cores"))
        }
        let overBudget = yaml.replacingOccurrences(of: "cores: four", with: "cores: 4").replacingOccurrences(
            of: "memory_budget_mib: 128", with: "memory_budget_mib: 4096")
        #expect(throws: ProfileError.self) { _ = try DeviceProfile.parse(overBudget, source: "budget.yaml") }
        do {
            _ = try DeviceProfile.parse(yaml.replacingOccurrences(of: "board: y\n", with: ""), source: "missing.yaml")
        } catch {
            #expect("\(error)".contains("missing field 'board'"))
        }
    }

    @Test func topicsRoundTrip() {
        #expect(Topic(parsing: Topic.infer(device: "pi-7").path)?.device == "pi-7")
        #expect(Topic(parsing: Topic.deviceState(device: "pi-7").path)?.device == "pi-7")
        #expect(Topic(parsing: "other/v1/infer/x") == nil)
        #expect(RequestID.decode(RequestID.encode(0xDEAD_BEEF_0102)) == 0xDEAD_BEEF_0102)
        #expect(RequestID.decode([1, 2, 3]) == nil)
    }
}
