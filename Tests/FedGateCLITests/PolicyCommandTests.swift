import ArgumentParser
import Foundation
import Testing
@testable import FedGateCLI

@Suite("fedgate policy check")
struct PolicyCommandTests {
    @Test("a plan against the hospital policy: JSON with the outcome and hashes")
    func decide() throws {
        let c = try PolicyCommand.Check.parse(["policies/hospital-a.yaml", "--plan", "examples/plans/breast-cancer-research.yaml",
                                               "--at", "2026-11-29T12:00:00Z", "--json"])
        let out = try #require(JSONSerialization.jsonObject(with: Data(try c.output().utf8)) as? [String: Any])
        #expect(out["outcome"] as? String == "needs_approval")
        #expect((out["plan_hash"] as? String)?.count == 64)
    }

    @Test("a malformed policy is refused with file:line:column")
    func malformed() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).yaml")
        try "silo: a\nsilo_typo: b\n".write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            _ = try PolicyCommand.Check.parse([url.path]).output()
            Issue.record("accepted")
        } catch {
            #expect(FedGateCommand.message(for: error).contains("\(url.path):2:1: silo_typo"))
        }
    }
}
