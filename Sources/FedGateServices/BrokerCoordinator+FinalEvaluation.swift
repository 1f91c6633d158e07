import Crypto
import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging
import FedGateRounds

/// After a plan's last round: the final model scored at every silo that took part, the plan's gate,
/// and a registry version when it passes.
extension BrokerCoordinator {
    /// Sends the final model to every silo that took part, waits for their evaluations (at most a
    /// round's deadline), applies the plan's gate and, if it passes, records a registry version with
    /// its lineage and file. The gate's decision is audited either way.
    /// `file`: the model's file when the last commit already made it (it is the checkpoint's).
    func evaluateFinal(_ plan: TrainingPlan, hash: String, round: Int, model: Network, file prepared: ModelFile?, standardisation: Standardisation,
                       participants: Set<String>, resumed: Bool) async throws {
        let file = try prepared ?? ModelPayload.modelFile(model, chunkBytes: chunkBytes, inputs: Self.inputs(plan, standardisation))
        let (silos, failures) = try await collectEvaluations(plan, hash: hash, round: round, model: model, file: file,
                                                             standardisation: standardisation, participants: participants, resumed: resumed)
        try await gate(plan, hash: hash, round: round, file: file, participants: participants, silos: silos, failures: failures)
    }

    /// The silos' evaluations of the final model, and why the others gave none.
    private func collectEvaluations(_ plan: TrainingPlan, hash: String, round: Int, model: Network, file: ModelFile, standardisation: Standardisation,
                                    participants: Set<String>, resumed: Bool) async throws -> (silos: [SiloEvaluation], failures: [String: String]) {
        // Right after a restart the participants are still reconnecting: give them the connect wait.
        let until = ContinuousClock.now + (resumed ? settings.connectWait : .zero)
        while !participants.allSatisfy(gateways.isConnected), ContinuousClock.now < until, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let asked = participants.filter(gateways.isConnected).sorted()
        evaluations[hash] = Evaluating(state: FinalEvaluation(round: round, expected: Set(asked)), model: file)
        var task = Fedgate_V1_EvaluateTask()
        task.planHash = hash
        task.round = UInt32(round)
        task.modelSha256 = file.sha256
        task.modelBytes = UInt64(file.bytes)
        task.deadlineMs = Int64(Date().addingTimeInterval(Double(plan.roundDeadlineSeconds)).timeIntervalSince1970 * 1000)
        task.featureMeans = standardisation.means
        task.featureScales = standardisation.scales
        task.classes = UInt32(model.classCount)
        send(.evaluate(task), to: asked)
        crashPoint("final-evaluation", round)
        await waitForRound(hash, until: .now + .seconds(plan.roundDeadlineSeconds))
        try Task.checkCancellation()
        let reports = evaluations.removeValue(forKey: hash)?.state.reports ?? [:]
        var silos: [SiloEvaluation] = [], failures: [String: String] = [:]
        for (silo, r) in reports {
            if r.error.isEmpty {
                silos.append(SiloEvaluation(silo: silo, accuracy: r.accuracy, examples: Int(r.examples), epsilonSpent: r.epsilonSpent, epsilonCap: r.epsilonCap,
                                            personalisedAccuracy: r.personalised ? r.personalisedAccuracy : nil))
            } else {
                failures[silo] = r.error
            }
        }
        for silo in asked where reports[silo] == nil { failures[silo] = "no evaluation by the deadline" }
        return (silos, failures)
    }

    /// The plan's gate on the silos' evaluations, audited either way; a registry version if it passes.
    private func gate(_ plan: TrainingPlan, hash: String, round: Int, file: ModelFile, participants: Set<String>,
                      silos: [SiloEvaluation], failures: [String: String]) async throws {
        let summary = EvaluationSummary(silos)
        let versions = try await durable { try await self.store.modelVersions() }
        let gate = ModelGate.decide(summary, minAccuracy: plan.minAccuracy, maxDrop: plan.maxAccuracyDrop,
                                    currentAccuracy: versions.last?.metrics["accuracy"])
        var perSilo: [String: AuditEvent.Gate.Silo] = [:]
        for s in summary.silos {
            perSilo[s.silo] = .init(accuracy: s.accuracy, examples: s.examples, epsilon: s.epsilonSpent, epsilonCap: s.epsilonCap,
                                    personalisedAccuracy: s.personalisedAccuracy)
        }
        let record = AuditEvent.Gate(round: round, passed: gate.passed, reasons: gate.reasons, accuracy: summary.pooledAccuracy,
                                     fairnessDelta: summary.fairnessDelta, silos: perSilo, failures: failures,
                                     minAccuracy: plan.minAccuracy, maxDrop: plan.maxAccuracyDrop)
        try await durable { try await self.store.audit(.modelGated(record), actor: settings.brokerID, subject: hash, at: Date()) }
        plans[hash]?.evaluation = summary
        plans[hash]?.gate = gate
        guard gate.passed, let accuracy = summary.pooledAccuracy else {
            logger.notice("final model held back by the gate", metadata: ["plan": "\(hash.prefix(12))", "reasons": "\(gate.reasons)"])
            return
        }
        var metrics = ["accuracy": accuracy, "fairness_delta": summary.fairnessDelta ?? 0]
        for s in summary.silos { metrics["accuracy.\(s.silo)"] = s.accuracy }
        let version = try await durable { try await self.store.addModelVersion(
            ModelVersion(version: 0, planHash: hash, round: round, contentSHA256: file.sha256, participants: participants.sorted(),
                         epsilonPerSilo: Dictionary(uniqueKeysWithValues: summary.silos.map { ($0.silo, $0.epsilonSpent) }),
                         metrics: metrics, parent: versions.last?.version, createdAt: Date()),
            content: file.contents, actor: settings.brokerID) }
        plans[hash]?.modelVersion = version
        logger.info("model version recorded", metadata: ["plan": "\(hash.prefix(12))", "version": "\(version)", "accuracy": "\(accuracy)"])
    }
}
