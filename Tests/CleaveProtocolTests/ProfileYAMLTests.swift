import CleaveSupport
import Testing

@testable import CleaveProtocol

@Suite struct ProfileYAMLTests {
    static let valid = """
        # a comment line
        name: pi   # trailing comment
        board: "Board \\"quoted\\" # not a comment"
        cores: 4
        clock_mhz: 1000
        ram_mib: 512
        memory_budget_mib: 128
        gflops: 4.5
        gflops_source: 'it''s measured'
        links: [wifi-2.4ghz, "ethernet 100"]
        activation_memory_kib: 64
        """

    @Test func readsScalarsQuotesCommentsAndBothListForms() throws {
        let profile = try DeviceProfile.parse(Self.valid, source: "p.yaml")
        #expect(profile.name == "pi")
        #expect(profile.board == "Board \"quoted\" # not a comment")
        #expect(profile.gflopsSource == "it's measured")
        #expect(profile.gflops == 4.5)
        #expect(profile.links == ["wifi-2.4ghz", "ethernet 100"])
        #expect(profile.activationMemoryKiB == 64)
        let block = Self.valid.replacingFirst("links: [wifi-2.4ghz, \"ethernet 100\"]", with: "links:\n  - wifi-2.4ghz\n  - \"ethernet 100\"\n")
        #expect(try DeviceProfile.parse(block, source: "b.yaml").links == ["wifi-2.4ghz", "ethernet 100"])
        let withoutBudget = Self.valid.replacingFirst("activation_memory_kib: 64", with: "activation_memory_kib: null")
        #expect(try DeviceProfile.parse(withoutBudget, source: "n.yaml").activationMemoryKiB == nil)
        #expect(try DeviceProfile.parse("---\r\n" + Self.valid.replacingFirst("\n", with: "\r\n"), source: "crlf.yaml").name == "pi")
    }

    /// Each refusal names the file, the line and what is wrong.
    @Test(arguments: [
        ("cores: 4", "cores: four", "line 4: field 'cores': expected a whole number, got 'four'"),
        ("cores: 4", "cores: [4]", "line 4: field 'cores': expected a single value"),
        ("links: [wifi-2.4ghz, \"ethernet 100\"]", "links: wifi", "field 'links': expected a list"),
        ("links: [wifi-2.4ghz, \"ethernet 100\"]", "links: [wifi, [x]]", "line 10: nested lists are not supported"),
        ("links: [wifi-2.4ghz, \"ethernet 100\"]", "links: [wifi,", "line 10: a list opened with '[' must close"),
        ("links: [wifi-2.4ghz, \"ethernet 100\"]", "links: [a, , b]", "line 10: an empty item"),
        ("gflops: 4.5", "gflops: fast", "field 'gflops': expected a number, got 'fast'"),
        ("gflops: 4.5", "gflops: 4.5\ngflops: 5", "line 9: field 'gflops' given twice (first on line 8)"),
        ("gflops: 4.5", "gflops: 4.5\nactivation_memory_kb: 64", "line 9: unknown field 'activation_memory_kb'"),
        ("gflops: 4.5", "gflops: 4.5\nnested:\n  key: value", "line 10: indented 'key: value'"),
        ("gflops: 4.5", "gflops: &anchor 4.5", "line 8: '&' starts YAML that profiles do not support"),
        ("gflops: 4.5", "gflops: |", "line 8: '|' starts YAML"),
        ("board: \"Board", "board: \"Board", "line 3: a quoted value is not closed"),
        ("board: \"Board", "board: \"B\" x \"", "line 3: text after the closing quote"),
        ("board: \"Board", "board: \"\\q\" #", "line 3: unsupported escape '\\q'"),
        ("cores: 4", "\tcores: 4", "line 4: tabs cannot indent YAML"),
        ("cores: 4", "cores 4", "line 4: expected 'field: value', got 'cores 4'"),
        ("cores: 4", "- 4", "line 4: a list item '- 4' without a field above it"),
        ("cores: 4", "", "missing field 'cores'"),
        ("cores: 4", "cores: 0", "line 4: field 'cores': must be at least 1, is 0"),
        ("activation_memory_kib: 64", "activation_memory_kib: 999999", "line 11: field 'activation_memory_kib': must be between 1"),
    ])
    func refusalsNameTheFileLineAndField(original: String, replacement: String, expected: String) {
        var text = Self.valid
        if original.hasPrefix("board") {
            text = text.replacingFirst("board: \"Board \\\"quoted\\\" # not a comment\"", with: replacement)
        } else {
            text = text.replacingFirst(original, with: replacement)
        }
        do {
            _ = try DeviceProfile.parse(text, source: "bad.yaml")
            Issue.record("accepted: \(replacement)")
        } catch {
            #expect(error.description.hasPrefix("bad.yaml: "), "\(error)")
            #expect(error.description.contains(expected), "\(error)")
        }
    }

    @Test func anUnreadableFileNamesThePathAndTheReason() {
        do {
            _ = try DeviceProfile.load("/nonexistent/profile.yaml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description == "/nonexistent/profile.yaml: cannot read: No such file or directory")
        }
    }

    /// 100,000 random texts and random edits of a valid profile: an error or a profile, never a trap.
    @Test func fuzzedProfilesNeverTrap() {
        var generator = SeededGenerator(seed: 11)
        let alphabet = Array("ab:#-[],'\" \n\t\\|&0123456789_".utf8)
        var accepted = 0
        for round in 0..<100_000 {
            var bytes = Array(Self.valid.utf8)
            if round % 3 == 0 {
                bytes = (0..<Int(generator.next() % 200)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            } else {
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    let at = Int(generator.next() % UInt64(bytes.count))
                    switch generator.next() % 3 {
                    case 0: bytes.remove(at: at)
                    case 1: bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: at)
                    default: bytes[at] = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    }
                }
            }
            if (try? DeviceProfile.parse(String(decoding: bytes, as: UTF8.self), source: "fuzz")) != nil { accepted += 1 }
        }
        // Comment and whitespace edits keep a profile valid; most edits do not.
        #expect(accepted > 0 && accepted < 100_000)
    }
}

extension String {
    fileprivate func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        var result = self
        result.replaceSubrange(range, with: replacement)
        return result
    }
}
