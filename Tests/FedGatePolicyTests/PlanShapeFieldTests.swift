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
        (true, "scaffold: true", "secure aggregation"),
        (false, "scaffold: yes please", "scaffold"),
    ])
    func refusals(_ secure: Bool, _ line: String, _ words: String) {
        let text = (secure ? Files.planText : Self.clear) + "\n" + line + "\n"
        #expect { try TrainingPlan.parse(text, file: "p.yaml") } throws: { "\($0)".contains(words) && "\($0)".contains("p.yaml") }
    }

    @Test("scaffold: true is read and enters the plan's hash; false is as if absent; with another strategy or a silo's own program it is refused")
    func scaffold() throws {
        let base = try TrainingPlan.parse(Self.clear, file: "p.yaml")
        let on = try TrainingPlan.parse(Self.clear + "\nscaffold: true\n", file: "p.yaml")
        let off = try TrainingPlan.parse(Self.clear + "\nscaffold: false\n", file: "p.yaml")
        #expect(base.scaffold == nil && on.scaffold == true && off.scaffold == nil)
        #expect(on.contentHash != base.contentHash && off.contentHash == base.contentHash)
        let median = Self.clear.replacingOccurrences(of: "strategy: fedavg", with: "strategy: median") + "\nscaffold: true\n"
        #expect { try TrainingPlan.parse(median, file: "p.yaml") } throws: { "\($0)".contains("scaffold") && "\($0)".contains("fedavg") }
    }

    @Test("dp.noise: discrete is read (continuous is as if absent, anything else refused), and a policy that requires it refuses a plan without it by rule")
    func discreteNoise() throws {
        let withGrid = Self.clear.replacingOccurrences(of: "dp:", with: "dp:\n  noise: discrete")
        let base = try TrainingPlan.parse(Self.clear, file: "p.yaml")
        let discrete = try TrainingPlan.parse(withGrid, file: "p.yaml")
        #expect(base.dp.discreteNoise == nil && discrete.dp.discreteNoise == true && discrete.contentHash != base.contentHash)
        let continuous = try TrainingPlan.parse(Self.clear.replacingOccurrences(of: "dp:", with: "dp:\n  noise: continuous"), file: "p.yaml")
        #expect(continuous.contentHash == base.contentHash)
        #expect { try TrainingPlan.parse(Self.clear.replacingOccurrences(of: "dp:", with: "dp:\n  noise: snapping"), file: "p.yaml") } throws: { "\($0)".contains("dp.noise") }
        let strict = try SiloPolicy.parse(Files.hospitalText.replacingOccurrences(of: "require_secure_aggregation: true", with: "require_secure_aggregation: false\n  require_discrete_noise: true"), file: "h.yaml")
        #expect(strict.requireDiscreteNoise && !Files.hospital.requireDiscreteNoise)
        func rules(_ plan: TrainingPlan) -> [String] { DiscreteNoiseRequired().check(DecisionContext(policy: strict, plan: plan, now: Self.noon)) }
        #expect(rules(base).first?.contains("dp.noise: discrete") == true && rules(discrete).isEmpty)
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

@Suite("Evaluation plans (kind: evaluate) and a silo's decision on them")
struct EvaluationPlanFieldTests {
    static var text: String {
        """
        kind: evaluate
        model_version: 2
        purpose: research
        datasets: [breast-cancer-2024]
        columns: [\(Files.plan.columns.joined(separator: ", "))]
        model: logistic
        quorum: 3
        broker: { region: eu-west, jurisdiction: EU }
        deadlines: { round_seconds: 600 }
        evaluation: { min_accuracy: 0.9 }
        """
    }

    @Test("an evaluation plan names its version and trains nothing; a training field, an unknown kind or a missing version is refused by name")
    func parse() throws {
        let plan = try TrainingPlan.parse(Self.text, file: "e.yaml")
        #expect(plan.isEvaluation && plan.evaluates == 2 && plan.rounds == 0 && plan.minAccuracy == 0.9)
        #expect(!Files.plan.isEvaluation && Files.plan.contentHash.hasPrefix("4d217752e52757f8"), "a training plan's hash is unchanged")
        #expect(try TrainingPlan.parse(Self.text.replacingOccurrences(of: "model_version: 2", with: "model_version: 3"), file: "e.yaml").contentHash != plan.contentHash)
        #expect { try TrainingPlan.parse(Self.text + "\nrounds: 5\n", file: "e.yaml") } throws: { "\($0)".contains("rounds") && "\($0)".contains("trains nothing") }
        #expect { try TrainingPlan.parse(Self.text + "\ndp: { noise_multiplier: 1 }\n", file: "e.yaml") } throws: { "\($0)".contains("'dp'") }
        #expect { try TrainingPlan.parse(Self.text.replacingOccurrences(of: "kind: evaluate", with: "kind: predict"), file: "e.yaml") } throws: {
            "\($0)".contains("kind") && "\($0)".contains("predict")
        }
        #expect { try TrainingPlan.parse(Self.text.replacingOccurrences(of: "model_version: 2\n", with: ""), file: "e.yaml") } throws: {
            "\($0)".contains("model_version")
        }
        #expect { try TrainingPlan.parse(Files.planText + "\nkind: evaluate\n", file: "p.yaml") } throws: { "\($0)".contains("trains nothing") }
        #expect(try TrainingPlan.parse("kind: train\n" + Files.planText, file: "p.yaml").contentHash == Files.plan.contentHash)
    }

    @Test("a silo judges an evaluation plan by what would leave: nothing of DP-SGD is asked; exactly, with DP (its ε projected), or refused when its policy releases neither")
    func decisions() throws {
        let plan = try TrainingPlan.parse(Self.text, file: "e.yaml")
        let noon = ISO8601DateFormatter().date(from: "2026-03-02T12:00:00Z")!
        // hospital-a requires secure aggregation and a clipping norm the placeholder DP would not meet: an
        // evaluation plan asks neither. Without a release of the final evaluation it is refused.
        func policy(_ releases: String) throws -> SiloPolicy {
            let text = Files.hospitalText.replacingOccurrences(of: "releases:\n  without_dp: [round_accuracy, final_evaluation]", with: "releases: \(releases)")
            #expect(text != Files.hospitalText)
            return try SiloPolicy.parse(text, file: "h.yaml")
        }
        let none = PolicyEngine.decide(DecisionContext(policy: try policy("{ without_dp: [round_accuracy] }"), plan: plan, now: noon))
        #expect(none.refusals.map(\.rule) == ["releases"], "\(none.refusals)")
        let exact = PolicyEngine.decide(DecisionContext(policy: try policy("{ without_dp: [final_evaluation] }"), plan: plan, now: noon))
        #expect(exact.refusals.isEmpty && exact.projectedEpsilon == 0, "\(exact.refusals) \(String(describing: exact.projectedEpsilon))")
        let noisy = PolicyEngine.decide(DecisionContext(policy: try policy("{ evaluation_noise_multiplier: 4.0 }"), plan: plan, now: noon))
        #expect(noisy.refusals.isEmpty && (noisy.projectedEpsilon ?? 0) > 0, "\(noisy.refusals)")
    }
}

@Suite("Statistics plans (kind: statistics)")
struct StatisticsPlanFieldTests {
    /// The example statistics plan.
    static var text: String { try! String(contentsOf: Files.root.appendingPathComponent("examples/plans/breast-cancer-statistics.yaml"), encoding: .utf8) }

    @Test("a statistics plan states every column's bounds and its histograms' edges; training fields, a schema, unbounded columns and edges that do not increase are refused by name")
    func parse() throws {
        let plan = try TrainingPlan.parse(Self.text, file: "s.yaml")
        #expect(plan.isStatistics && plan.trainsNothing && plan.analytics?.minCell == 10 && plan.analytics?.histograms["mean_radius"]?.count == 6)
        let release = try plan.analyticsRelease(features: plan.columns)
        #expect(release.histograms.map(\.column) == [0] && abs(release.sensitivity - (1 + 10.0 / 16 + 1).squareRoot()) < 1e-12)
        for (change, words) in [("\nrounds: 3\n", "rounds"), ("\nmodel: logistic\n", "model"),
                                ("\nschema: { columns: [] }\n", "schema")] {
            #expect { try TrainingPlan.parse(Self.text + change, file: "s.yaml") } throws: { "\($0)".contains(words) }
        }
        #expect { try TrainingPlan.parse(Self.text.replacingOccurrences(of: "    mean_area: [140, 2600]\n", with: ""), file: "s.yaml") } throws: {
            "\($0)".contains("statistics.bounds") && "\($0)".contains("mean_area")
        }
        #expect { try TrainingPlan.parse(Self.text.replacingOccurrences(of: "[6, 10, 14, 18, 22, 30]", with: "[6, 10, 10]"), file: "s.yaml") } throws: {
            "\($0)".contains("histograms.mean_radius")
        }
        #expect { try TrainingPlan.parse(Self.text.replacingOccurrences(of: "  mean_radius: [6, 10", with: "  age: [6, 10"), file: "s.yaml") } throws: {
            "\($0)".contains("histograms.age")
        }
    }

    @Test("a silo judges a statistics plan by its release: its noise multiplier against the least accepted, its ε against the caps; no DP-SGD or model rule")
    func decisions() throws {
        let plan = try TrainingPlan.parse(Self.text, file: "s.yaml")
        let noon = ISO8601DateFormatter().date(from: "2026-03-02T12:00:00Z")!
        let decision = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: plan, now: noon))
        #expect(decision.refusals.isEmpty && (decision.projectedEpsilon ?? 0) > 0, "\(decision.refusals)")
        let weak = try TrainingPlan.parse(Self.text.replacingOccurrences(of: "noise_multiplier: 4.0", with: "noise_multiplier: 0.1"), file: "s.yaml")
        let refused = PolicyEngine.decide(DecisionContext(policy: Files.hospital, plan: weak, now: noon))
        #expect(refused.refusals.map(\.rule).contains("noise"), "\(refused.refusals)")
    }
}

@Suite("Client sampling in a plan and a silo's round quota")
struct SamplingQuotaFieldTests {
    @Test("sampling is a fraction with a floor at least the quorum, or a count; both, neither or a floor under the quorum are refused by name")
    func sampling() throws {
        let clear = PlanShapeFieldTests.clear
        let plan = try TrainingPlan.parse(clear + "\nsampling: { fraction: 0.5, min: 3 }\n", file: "p.yaml")
        #expect(plan.sampling == .init(fraction: 0.5, count: nil, min: 3))
        #expect(try TrainingPlan.parse(clear + "\nsampling: { count: 4 }\n", file: "p.yaml").sampling?.count == 4)
        for (text, words) in [("{ fraction: 0.5, count: 4 }", "exactly one"), ("{ min: 3 }", "exactly one"), ("{ fraction: 0.5, min: 1 }", "sampling.min"),
                              ("{ count: 1 }", "sampling.count"), ("{ fraction: 1.5 }", "sampling.fraction"), ("{ count: 4, min: 3 }", "sampling.min")] {
            #expect { try TrainingPlan.parse(clear + "\nsampling: \(text)\n", file: "p.yaml") } throws: { "\($0)".contains(words) }
        }
    }

    @Test("a quota counts the distinct training rounds of the last 24 hours, not statistics releases or older rounds")
    func quota() throws {
        let policy = try SiloPolicy.parse(Files.hospitalText + "\nquota: { rounds_per_day: 2 }\n", file: "h.yaml")
        #expect(policy.roundsPerDay == 2)
        let now = PlanShapeFieldTests.noon
        let hour = 3600.0
        // Round 1 of p on two data sets counts once; round 0 (a statistics release) and a round two days ago not at all.
        var rounds: [(plan: String, round: Int, at: Date)] = [("p", 1, now - hour), ("p", 1, now - hour), ("p", 0, now - hour), ("q", 4, now - 50 * hour)]
        #expect(policy.quotaRefusal(rounds: rounds, now: now) == nil)
        rounds.append(("q", 5, now - 2 * hour))
        #expect(policy.quotaRefusal(rounds: rounds, now: now)?.contains("quota.rounds_per_day") == true)
        #expect(Files.hospital.quotaRefusal(rounds: rounds, now: now) == nil, "no quota, no refusal")
        #expect { try SiloPolicy.parse(Files.hospitalText + "\nquota: { rounds_per_day: 0 }\n", file: "h.yaml") } throws: { "\($0)".contains("quota.rounds_per_day") }
        #expect(try SiloPolicy.parse(Files.hospitalText + "\nmax_concurrent_plans: 2\n", file: "h.yaml").maxConcurrentPlans == 2 && Files.hospital.maxConcurrentPlans == nil)
        #expect { try SiloPolicy.parse(Files.hospitalText + "\nmax_concurrent_plans: 0\n", file: "h.yaml") } throws: { "\($0)".contains("max_concurrent_plans") }
        // Monitoring releases of a deployed version are no training rounds.
        rounds.removeLast()
        rounds.append((SiloPolicy.monitoringKey(version: 3), 5, now - hour))
        #expect(policy.quotaRefusal(rounds: rounds, now: now) == nil)
    }

    @Test("monitoring: a noise multiplier, a schedule and a least window; defaults an hour and 50 rows; absent, the silo monitors nothing; a bad value names its field")
    func monitoring() throws {
        let policy = try SiloPolicy.parse(Files.hospitalText + "\nmonitoring: { noise_multiplier: 2.5, every_seconds: 600, min_rows: 40 }\n", file: "h.yaml")
        #expect(policy.monitoring == SiloPolicy.Monitoring(noiseMultiplier: 2.5, everySeconds: 600, minRows: 40))
        #expect(try SiloPolicy.parse(Files.hospitalText + "\nmonitoring: { noise_multiplier: 3 }\n", file: "h.yaml").monitoring
                == SiloPolicy.Monitoring(noiseMultiplier: 3, everySeconds: 3600, minRows: 50))
        #expect(Files.hospital.monitoring == nil)
        for (text, field) in [("{ every_seconds: 60 }", "monitoring.noise_multiplier"), ("{ noise_multiplier: 0.1 }", "monitoring.noise_multiplier"),
                              ("{ noise_multiplier: 2, min_rows: 3 }", "monitoring.min_rows"), ("{ noise_multiplier: 2, every_seconds: 0 }", "monitoring.every_seconds"),
                              ("{ noise_multiplier: 2, window: 3 }", "window")] {
            #expect { try SiloPolicy.parse(Files.hospitalText + "\nmonitoring: \(text)\n", file: "h.yaml") } throws: { "\($0)".contains(field) }
        }
    }
}
