import Foundation
import Testing
@testable import FedGatePolicy

@Suite("A plan's FedProx and update codec, and a silo's codec rule")
struct PlanShapeFieldTests {
    /// The example plan with updates in the clear (a codec needs them so).
    static var clear: String { Files.planText.replacingOccurrences(of: "secure_aggregation: true", with: "secure_aggregation: false") }
    static let noon = ISO8601DateFormatter().date(from: "2026-03-02T12:00:00Z")!

    @Test("fedprox and compression are read, and enter the plan's hash only when given")
    func read() throws {
        let base = try TrainingPlan.parse(Self.clear, file: "p.yaml")
        #expect(base.fedprox == nil && base.compression == nil)
        let shaped = try TrainingPlan.parse(Self.clear + "\nfedprox: 0.1\ncompression: topk:0.1\n", file: "p.yaml")
        #expect(shaped.fedprox == 0.1 && shaped.compression == "topk:0.1")
        #expect(shaped.contentHash != base.contentHash)
        var same = shaped
        (same.fedprox, same.compression) = (nil, nil)
        #expect(same.contentHash == base.contentHash)
    }

    @Test("an unknown codec, a codec with secure aggregation and a μ out of range are refused, naming the field", arguments: [
        (false, "compression: q4", "compression"),
        (true, "compression: q8", "secure aggregation"),
        (false, "fedprox: 0", "fedprox"),
        (false, "fedprox: 1000", "fedprox"),
    ])
    func refusals(_ secure: Bool, _ line: String, _ words: String) {
        let text = (secure ? Files.planText : Self.clear) + "\n" + line + "\n"
        #expect { try TrainingPlan.parse(text, file: "p.yaml") } throws: { "\($0)".contains(words) && "\($0)".contains("p.yaml") }
    }

    @Test("a policy's compression list requires a codec (no `none`) or forbids one (only `none`); a name it does not know is refused")
    func codecRule() throws {
        func policy(_ list: String) throws -> SiloPolicy { try SiloPolicy.parse(Files.hospitalText + "\ncompression: \(list)\n", file: "h.yaml") }
        let plain = try TrainingPlan.parse(Self.clear, file: "p.yaml")
        let q8 = try TrainingPlan.parse(Self.clear + "\ncompression: q8\n", file: "p.yaml")
        let topk = try TrainingPlan.parse(Self.clear + "\ncompression: topk:0.05\n", file: "p.yaml")
        func refusals(_ p: SiloPolicy, _ plan: TrainingPlan) -> [String] {
            PolicyEngine.decide(DecisionContext(policy: p, plan: plan, now: Self.noon)).refusals.filter { $0.rule == "compression" }.map(\.reason)
        }
        let requires = try policy("[q8, topk]")
        #expect(refusals(requires, plain).first?.contains("requires a codec") == true)
        #expect(refusals(requires, q8).isEmpty && refusals(requires, topk).isEmpty)
        let forbids = try policy("[none]")
        #expect(refusals(forbids, plain).isEmpty && refusals(forbids, q8).first?.contains("q8") == true)
        #expect(refusals(Files.hospital, q8).isEmpty, "a policy without the rule takes any codec")
        #expect { try policy("[none, gzip]") } throws: { "\($0)".contains("compression") && "\($0)".contains("gzip") }
        #expect { try policy("[]") } throws: { "\($0)".contains("compression") }
    }
}
