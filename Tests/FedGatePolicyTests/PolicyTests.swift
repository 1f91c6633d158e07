import Foundation
import Testing
import FedGatePrivacy
@testable import FedGatePolicy

enum Files {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var hospital: SiloPolicy { try! SiloPolicy.load(root.appendingPathComponent("policies/hospital-a.yaml")) }
    static var hospitalText: String { try! String(contentsOf: root.appendingPathComponent("policies/hospital-a.yaml"), encoding: .utf8) }
    static var bank: SiloPolicy { try! SiloPolicy.load(root.appendingPathComponent("policies/bank-b.yaml")) }
    static var planText: String { try! String(contentsOf: root.appendingPathComponent("examples/plans/breast-cancer-research.yaml"), encoding: .utf8) }
    static var plan: TrainingPlan { try! TrainingPlan.parse(planText, file: "plan.yaml") }
}

@Suite("Policy files and plans")
struct PolicyFileTests {
    @Test("the example policies and plan parse")
    func examples() {
        #expect(Files.hospital.silo == "hospital-a")
        #expect(Files.hospital.datasets["breast-cancer-2024"]?.caps.window?.days == 30)
        #expect(Files.bank.hours?.from == 20)
        #expect(Files.plan.totalSteps == 150)
    }

    @Test("malformed files name the file, line, column and field", arguments: [
        ("silo: a\nsilo_typo: b\n", 2, "silo_typo", "not a known field"),
        ("silo: [a, b]\n", 1, "silo", "non-empty string"),
        ("silo: a\ndatasets:\n  x:\n    purposes: research\n    columns: [c]\n    epsilon: {per_plan: 1}\n    delta_max: 1e-5\n", 4, "datasets.x.purposes", "list of strings"),
        ("silo: a\ndatasets: {x: {purposes: [r], columns: [c], epsilon: {per_plan: -1}, delta_max: 1e-5}}\n", 2, "datasets.x.epsilon.per_plan", "between"),
        ("silo: a\n  bad: [\n", 2, "(document)", "valid YAML"),
        ("", 1, "(document)", "empty"),
        ("silo: a\nsilo: b\n", 2, "silo", "twice"),
        ("silo: a\n", 1, "datasets", "is required"),
    ])
    func malformedPolicy(_ text: String, _ line: Int, _ field: String, _ expected: String) {
        do {
            _ = try SiloPolicy.parse(text, file: "p.yaml")
            Issue.record("accepted: \(text)")
        } catch let e as PolicyFileError {
            #expect(e.file == "p.yaml" && e.line == line && e.field == field && e.expected.contains(expected), "\(e)")
            #expect(e.description.hasPrefix("p.yaml:\(line):"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a plan needs exactly one of a noise multiplier and a target ε")
    func dpChoice() {
        let both = Files.planText.replacingOccurrences(of: "noise_multiplier: 2.34", with: "noise_multiplier: 2.34\n  target_epsilon: 3")
        #expect(throws: PolicyFileError.self) { try TrainingPlan.parse(both, file: "p") }
        let neither = Files.planText.replacingOccurrences(of: "  noise_multiplier: 2.34\n", with: "")
        #expect(throws: PolicyFileError.self) { try TrainingPlan.parse(neither, file: "p") }
    }

    @Test("the plan hash depends on content, not on layout or comments")
    func canonicalHash() throws {
        let reformatted = "# another comment\n" + Files.planText.replacingOccurrences(of: "broker: { region: eu-west, jurisdiction: EU }", with: "broker:\n  jurisdiction: EU\n  region: eu-west")
        #expect(try TrainingPlan.parse(reformatted, file: "p").contentHash == Files.plan.contentHash)
        let changed = Files.planText.replacingOccurrences(of: "rounds: 15", with: "rounds: 16")
        #expect(try TrainingPlan.parse(changed, file: "p").contentHash != Files.plan.contentHash)
    }
}

@Suite("Decisions of plans against policies")
struct DecisionTests {
    let noon = ISO8601DateFormatter().date(from: "2026-11-29T12:00:00Z")!

    @Test("a conforming plan waits for approval with its projected ε, which is the accountant's")
    func accepted() throws {
        let d = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: Files.plan, now: noon))
        #expect(d.outcome == .needsApproval)
        #expect(d.refusals.isEmpty)
        // The statistics release (Gaussian, multiplier 4) and 15 rounds of 10 DP-SGD steps.
        let expected = try epsilon(of: .composed([.gaussian(noiseMultiplier: 4), .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 150)]), delta: 1e-5)
        #expect(d.projectedEpsilon == expected)
        #expect(d.policyHash == Files.hospital.sha256 && d.planHash == Files.plan.contentHash)
    }

    @Test("without a schema, a model other than logistic regression takes its classes from the silo's labels: refused unless the policy releases label_classes")
    func labelClasses() throws {
        var plan = Files.plan
        plan.model = "softmax"
        let refused = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: plan, now: noon))
        #expect(refused.refusals.map(\.rule) == ["releases"] && refused.refusals[0].reason.contains("releases.without_dp: [label_classes]"))
        let text = try String(contentsOf: Files.root.appendingPathComponent("policies/hospital-a.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "without_dp: [round_accuracy, final_evaluation]", with: "without_dp: [round_accuracy, final_evaluation, label_classes]")
        let releasing = try SiloPolicy.parse(text, file: "hospital-a.yaml")
        #expect(PolicyEngine.decide(DecisionContext(policy: releasing, plan: plan, now: noon)).refusals.isEmpty)
    }

    @Test("a refusal lists every failing rule with its reason")
    func everyReason() {
        var plan = Files.plan
        plan.purpose = "marketing"
        plan.columns.append("patient_name")
        plan.brokerRegion = "us-east"
        plan.dp.noiseMultiplier = 0.5
        plan.dp.clipNorm = 5
        plan.dp.delta = 1e-3
        plan.secureAggregation = false
        plan.quorum = 2
        plan.model = "transformer"
        plan.executor = .program("pytorch")
        let d = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: plan, now: noon))
        #expect(d.outcome == .refused)
        let rules = Set(d.refusals.map(\.rule))
        #expect(rules == ["purpose", "columns", "residency", "noise", "clipping", "delta", "budget", "secure-aggregation", "quorum", "model", "executor"], "\(rules)")
        #expect(d.refusals.contains { $0.reason == "purpose 'marketing' is not allowed for data set 'breast-cancer-2024' (allowed: research, quality-improvement)" })
        #expect(d.refusals.contains { $0.reason.contains("patient_name") })
    }

    @Test("a purpose the consent registry does not cover is refused, naming what consent covers")
    func consent() {
        let covered = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: Files.plan, now: noon,
                                                          consentedPurposes: ["breast-cancer-2024": ["research"]]))
        #expect(covered.refusals.isEmpty)
        let d = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: Files.plan, now: noon,
                                                    consentedPurposes: ["breast-cancer-2024": ["quality-improvement"]]))
        #expect(d.refusals.map(\.reason) == ["purpose 'research' is not consented for data set 'breast-cancer-2024' (consent covers: quality-improvement)"])
    }

    @Test("budget caps count the ledger's prior events: window and lifetime")
    func priorSpend() throws {
        let prior = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200)
        let window = Array(repeating: prior, count: 3), lifetime = Array(repeating: prior, count: 12)
        // The caps really are exceeded: 4 runs pass the 30-day cap of 5, 13 the lifetime cap of 10.
        #expect(try epsilon(of: .composed(window + [prior]), delta: 1e-5) > 5)
        #expect(try epsilon(of: .composed(lifetime + [prior]), delta: 1e-5) > 10)
        let d = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: Files.plan, now: noon,
                                                    priorEvents: ["breast-cancer-2024": (window: window, lifetime: lifetime)]))
        #expect(d.outcome == .refused)
        #expect(d.refusals.contains { $0.rule == "budget" && $0.reason.contains("last 30 days") })
        #expect(d.refusals.contains { $0.rule == "budget" && $0.reason.contains("lifetime") })
    }

    @Test("a target ε is calibrated to a noise multiplier before the policy's minimum is checked")
    func targetEpsilon() {
        var plan = Files.plan
        plan.dp.noiseMultiplier = nil
        plan.dp.targetEpsilon = 2
        let d = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: plan, now: noon))
        #expect(d.outcome == .needsApproval)
        #expect(d.projectedEpsilon! <= 2)
    }

    @Test("allowed hours may wrap midnight")
    func hours() throws {
        let bank = Files.bank
        var plan = Files.plan
        plan.datasets = ["card-transactions-2025"]; plan.purpose = "fraud-detection"; plan.columns = ["amount"]
        plan.brokerRegion = "eu-central"; plan.dp.clipNorm = 0.5; plan.dp.delta = 1e-6; plan.quorum = 5
        plan.dp.noiseMultiplier = 8; plan.rounds = 2
        plan.statistics = .init(noiseMultiplier: 20, bounds: ["amount": [0, 10_000]])  // the bank's ε cap is 1
        let night = ISO8601DateFormatter().date(from: "2026-11-29T23:00:00Z")!
        let early = ISO8601DateFormatter().date(from: "2026-11-29T05:00:00Z")!
        #expect(PolicyEngine.decide(DecisionContext(policy: bank, plan: plan, now: night)).outcome == .accepted)
        #expect(PolicyEngine.decide(DecisionContext(policy: bank, plan: plan, now: early)).outcome == .accepted)
        let d = PolicyEngine.decide(DecisionContext(policy: bank, plan: plan, now: noon))
        #expect(d.refusals.map(\.rule) == ["hours"])
    }
}
