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

/// After a plan's last round: the final model scored at every silo that took part, then handed to
/// `ModelPromotion` (the plan's gate, and a registry version when it passes).
extension BrokerCoordinator {
    /// Sends the final model to every silo that took part, waits for their evaluations (at most a
    /// round's deadline) and promotes the model if the plan's gate passes.
    /// `file`: the model's file when the last commit already made it (it is the checkpoint's).
    func evaluateFinal(_ plan: TrainingPlan, hash: String, round: Int, model: Network, file prepared: ModelFile?, standardisation: Standardisation,
                       participants: Set<String>, resumed: Bool) async throws {
        let file = try prepared ?? ModelPayload.modelFile(model, chunkBytes: chunkBytes, inputs: Self.inputs(plan, standardisation))
        let (features, target) = Self.split(standardisation, model.kind)
        let evaluations = try await collectEvaluations(plan, hash: hash, round: round, model: model, file: file,
                                                       features: features, target: target, participants: participants, resumed: resumed)
        let promotion = ModelPromotion(store: runStore, brokerID: settings.brokerID, wallClock: settings.wallClock, logger: logger)
        let outcome = try await promotion.promote(plan, hash: hash, round: round, file: file, participants: participants, evaluations: evaluations)
        plans[hash]?.evaluation = outcome.summary
        plans[hash]?.gate = outcome.gate
        plans[hash]?.modelVersion = outcome.version
    }

    /// The silos' evaluations of the final model, and why the others gave none.
    func collectEvaluations(_ plan: TrainingPlan, hash: String, round: Int, model: Network, file: ModelFile, features: Standardisation,
                            target: (mean: Float, scale: Float)?, participants: Set<String>, resumed: Bool) async throws -> ModelPromotion.Evaluations {
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
        task.deadlineMs = Int64(now().addingTimeInterval(Double(plan.roundDeadlineSeconds)).timeIntervalSince1970 * 1000)
        task.featureMeans = features.means
        task.featureScales = features.scales
        if let target { (task.targetMean, task.targetScale) = target }
        task.classes = UInt32(model.classCount)
        send(.evaluate(task), to: asked)
        crashPoint("final-evaluation", round)
        await waitForRound(hash, until: .now + .seconds(plan.roundDeadlineSeconds))
        try Task.checkCancellation()
        let reports = evaluations.removeValue(forKey: hash)?.state.reports ?? [:]
        var evaluations = ModelPromotion.Evaluations()
        for (silo, r) in reports {
            if r.error.isEmpty {
                let regression = model.regression
                evaluations.silos.append(SiloEvaluation(silo: silo, accuracy: r.accuracy, examples: Int(r.examples), epsilonSpent: r.epsilonSpent, epsilonCap: r.epsilonCap,
                                            personalisedAccuracy: r.personalised ? r.personalisedAccuracy : nil,
                                            rmse: regression ? r.rmse : nil, mae: regression ? r.mae : nil, r2: regression ? r.r2 : nil))
                evaluations.silos[evaluations.silos.count - 1].slices = r.slices.map(SliceFigure.init)
            } else {
                evaluations.failures[silo] = r.error
            }
        }
        for silo in asked where reports[silo] == nil { evaluations.failures[silo] = "no evaluation by the deadline" }
        return evaluations
    }
}
