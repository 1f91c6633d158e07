import FedGatePolicy
import Testing

@Suite("The evaluation gate on a plan's final model")
struct ModelGateTests {
    let silos = [
        SiloEvaluation(silo: "hospital-b", accuracy: 0.90, examples: 100, epsilonSpent: 1.2, epsilonCap: 5),
        SiloEvaluation(silo: "hospital-a", accuracy: 0.98, examples: 300, epsilonSpent: 1.2, epsilonCap: 5),
    ]

    @Test("pooled accuracy weighs each silo by its held-out rows; the fairness delta is best minus worst")
    func summary() {
        let s = EvaluationSummary(silos)
        #expect(s.silos.map(\.silo) == ["hospital-a", "hospital-b"])
        #expect(abs(s.pooledAccuracy! - (0.98 * 300 + 0.90 * 100) / 400) < 1e-12)
        #expect(abs(s.fairnessDelta! - 0.08) < 1e-12)
        #expect(EvaluationSummary([]).pooledAccuracy == nil && EvaluationSummary([]).fairnessDelta == nil)
        #expect(EvaluationSummary([silos[0]]).fairnessDelta == 0)
    }

    @Test("a model passes with enough accuracy and no more than the allowed drop below the current version")
    func passes() {
        let s = EvaluationSummary(silos)  // pooled 0.96
        #expect(ModelGate.decide(s, minAccuracy: 0.93, maxDrop: 0.01, currentAccuracy: 0.965).passed)
        #expect(ModelGate.decide(s, minAccuracy: nil, maxDrop: nil, currentAccuracy: nil) == GateDecision(passed: true, reasons: []))
        #expect(ModelGate.decide(s, minAccuracy: 0.93, maxDrop: 0.01, currentAccuracy: nil).passed, "no current version: only the minimum applies")
    }

    @Test("each failed rule is a reason: below the minimum, too far below the current version, nothing evaluated")
    func refuses() {
        let s = EvaluationSummary(silos)
        let low = ModelGate.decide(s, minAccuracy: 0.97, maxDrop: 0.01, currentAccuracy: 0.98)
        #expect(!low.passed && low.reasons.count == 2)
        #expect(low.reasons[0] == "accuracy 0.96 is below the plan's minimum 0.97")
        #expect(low.reasons[1] == "accuracy 0.96 is 2.0 points below the current version's 0.98; the plan allows 1.0")
        #expect(ModelGate.decide(EvaluationSummary([]), minAccuracy: nil, maxDrop: nil, currentAccuracy: nil).reasons
                == ["no silo evaluated the model on held-out rows"])
    }

    @Test("a plan's evaluation section names its gate; a drop outside 0…1 is refused with the field")
    func planField() throws {
        let base = Files.planText
        let plan = try TrainingPlan.parse(base.replacingOccurrences(of: "evaluation: { min_accuracy: 0.9 }",
                                                                    with: "evaluation: { min_accuracy: 0.93, max_drop: 0.01 }"), file: "plan.yaml")
        #expect(plan.minAccuracy == 0.93 && plan.maxAccuracyDrop == 0.01)
        #expect(try TrainingPlan.parse(base, file: "plan.yaml").maxAccuracyDrop == nil)
        #expect(throws: (any Error).self) {
            try TrainingPlan.parse(base.replacingOccurrences(of: "evaluation: { min_accuracy: 0.9 }", with: "evaluation: { max_drop: 5 }"), file: "plan.yaml")
        }
    }
}
