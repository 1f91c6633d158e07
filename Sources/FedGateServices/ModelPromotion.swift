import FedGatePolicy
import FedGateStore
import FedGateTransport
import Foundation
import Logging

/// After a plan's final evaluation: the plan's gate on what the silos reported, audited either way,
/// and a registry version with its lineage and file when the gate passes. One job, no network:
/// the plan runner hands it the evaluations and records what it decided.
struct ModelPromotion: Sendable {
    let store: RetryingStore
    let brokerID: String
    let wallClock: WallClock
    let logger: Logger

    /// What the promotion decided.
    struct Outcome: Sendable {
        let summary: EvaluationSummary
        let gate: GateDecision
        /// The registry version recorded (nil: held back by the gate).
        let version: Int?
    }

    /// The silos' evaluations of a plan's final model (`silos`), and why the others gave none (`failures`).
    struct Evaluations: Sendable {
        var silos: [SiloEvaluation] = []
        var failures: [String: String] = [:]
    }

    /// The plan's gate on the silos' evaluations, audited (`model.gate`) either way.
    func judge(_ plan: TrainingPlan, hash: String, round: Int, evaluations: Evaluations) async throws -> (EvaluationSummary, GateDecision) {
        let summary = EvaluationSummary(evaluations.silos)
        let versions = try await store.modelVersions()
        let gate = summary.isRegression ? ModelGate.decideRegression(summary, maxRMSE: plan.maxRMSE, minR2: plan.minR2)
            : ModelGate.decide(summary, minAccuracy: plan.minAccuracy, maxDrop: plan.maxAccuracyDrop, currentAccuracy: versions.last?.metrics["accuracy"],
                               maxSliceGap: plan.maxSliceGap)
        try await store.audit(.modelGated(Self.record(plan, round: round, summary: summary, gate: gate, failures: evaluations.failures)),
                              actor: brokerID, subject: hash, at: wallClock.now())
        return (summary, gate)
    }

    func promote(_ plan: TrainingPlan, hash: String, round: Int, file: ModelFile, participants: Set<String>,
                 evaluations: Evaluations) async throws -> Outcome {
        let (summary, gate) = try await judge(plan, hash: hash, round: round, evaluations: evaluations)
        let versions = try await store.modelVersions()
        guard gate.passed, let metrics = Self.metrics(summary) else {
            logger.notice("final model held back by the gate", metadata: ["plan": "\(hash.prefix(12))", "reasons": "\(gate.reasons)"])
            return Outcome(summary: summary, gate: gate, version: nil)
        }
        let draft = ModelVersion(version: 0, planHash: hash, round: round, contentSHA256: file.sha256, participants: participants.sorted(),
                                 epsilonPerSilo: Dictionary(uniqueKeysWithValues: summary.silos.map { ($0.silo, $0.epsilonSpent) }),
                                 metrics: metrics, parent: versions.last?.version, createdAt: wallClock.now())
        let version = try await store.addModelVersion(draft, content: file.contents, actor: brokerID)
        logger.info("model version recorded", metadata: ["plan": "\(hash.prefix(12))", "version": "\(version)", "metrics": "\(metrics)"])
        return Outcome(summary: summary, gate: gate, version: version)
    }

    /// A version's metrics: pooled and per silo (accuracy and fairness, or a regression's RMSE,
    /// MAE and R²); nil when no silo evaluated.
    static func metrics(_ summary: EvaluationSummary) -> [String: Double]? {
        if summary.isRegression {
            guard let rmse = summary.pooledRMSE, let mae = summary.pooledMAE, let r2 = summary.meanR2 else { return nil }
            var metrics = ["rmse": rmse, "mae": mae, "r2": r2]
            for s in summary.silos { metrics["rmse.\(s.silo)"] = s.rmse }
            return metrics
        }
        guard let accuracy = summary.pooledAccuracy else { return nil }
        var metrics = ["accuracy": accuracy, "fairness_delta": summary.fairnessDelta ?? 0]
        for s in summary.silos { metrics["accuracy.\(s.silo)"] = s.accuracy }
        for (cell, figure) in summary.pooledSlices { metrics["accuracy[\(cell)]"] = figure.accuracy }
        if let gap = summary.sliceGap { metrics["slice_gap"] = gap }
        return metrics
    }

    /// The gate's audit record: its decision, the pooled figures and each silo's.
    static func record(_ plan: TrainingPlan, round: Int, summary: EvaluationSummary, gate: GateDecision,
                       failures: [String: String]) -> AuditEvent.Gate {
        var perSilo: [String: AuditEvent.Gate.Silo] = [:]
        for s in summary.silos {
            perSilo[s.silo] = .init(accuracy: s.accuracy, examples: s.examples, epsilon: s.epsilonSpent, epsilonCap: s.epsilonCap,
                                    personalisedAccuracy: s.personalisedAccuracy)
            perSilo[s.silo]?.rmse = s.rmse
        }
        let regression = summary.isRegression
        var record = AuditEvent.Gate(round: round, passed: gate.passed, reasons: gate.reasons, accuracy: regression ? nil : summary.pooledAccuracy,
                                     fairnessDelta: regression ? nil : summary.fairnessDelta, silos: perSilo, failures: failures,
                                     minAccuracy: plan.minAccuracy, maxDrop: plan.maxAccuracyDrop)
        if regression { (record.rmse, record.r2, record.maxRMSE, record.minR2) = (summary.pooledRMSE, summary.meanR2, plan.maxRMSE, plan.minR2) }
        if plan.slices != nil {
            (record.slices, record.sliceGap, record.maxSliceGap) = (summary.pooledSlices.mapValues(\.accuracy), summary.sliceGap, plan.maxSliceGap)
        }
        return record
    }
}
