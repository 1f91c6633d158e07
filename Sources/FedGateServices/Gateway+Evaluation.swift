import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// The final model's evaluation on this silo's held-out rows (and, with personalisation, its own model's).
extension Gateway {
    func startEvaluation(_ task: Fedgate_V1_EvaluateTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                                 reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        Task {
            var report = Fedgate_V1_EvaluationReport()
            report.planHash = task.planHash
            report.round = task.round
            do {
                try await self.evaluate(task, broker: broker, into: &report)
            } catch {
                report.error = "\(error)"
                self.logger.error("evaluation failed", metadata: ["silo": "\(self.siloID)", "plan": "\(task.planHash.prefix(12))", "error": "\(error)"])
            }
            var message = Fedgate_V1_GatewayMessage()
            message.evaluation = report
            reply.yield(message)
        }
    }

    /// The plan's final model on this silo's held-out rows, and the ε this silo's ledger committed for the plan.
    func evaluate(_ task: Fedgate_V1_EvaluateTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                          into report: inout Fedgate_V1_EvaluationReport) async throws {
        guard let accepted = judge.accepted(task.planHash) else {
            throw GatewayError.unacceptedPlan(plan: task.planHash, asked: "an evaluation")
        }
        let payload = try await fetchModel(broker, plan: task.planHash, round: task.round, sha256: task.modelSha256, until: task.deadlineMs)
        var test = accepted.test
        guard task.featureMeans.count == test.featureCount, task.featureScales.count == test.featureCount else {
            throw GatewayError.standardisationMismatch(consortium: task.featureMeans.count, silo: test.featureCount)
        }
        test.standardise(Standardisation(means: task.featureMeans, scales: task.featureScales))
        let kind = try ModelKind(parsing: accepted.plan.model)
        let dimension = try Network.parameterCount(kind: kind, inputs: test.featureCount, classes: Int(task.classes))
        let model = try Network(kind: kind, inputs: test.featureCount, classes: Int(task.classes),
                                parameters: try ModelPayload.modelParameters(payload, dimension: dimension))
        guard governor.policy.allows(.finalEvaluation) else {
            return try await evaluateWithDP(model, on: test, task, accepted, into: &report)
        }
        if model.regression { return try await evaluateRegression(model, on: test, task, accepted, into: &report) }
        let result = model.evaluate(test)
        let plan = accepted.plan
        if !(plan.localLayers ?? []).isEmpty || (plan.fineTuneEpochs ?? 0) > 0 {
            // The silo's own model: the shared layers, its local layers, fine-tuned on its rows. It
            // never leaves the silo; only its accuracy does.
            var own = model
            if let mine = personal[task.planHash], mine.count == own.parameters.count {
                for i in plan.localLayers ?? [] where own.layerRanges.indices.contains(i) {
                    own.parameters.replaceSubrange(own.layerRanges[i], with: mine[own.layerRanges[i]])
                }
            }
            if let epochs = plan.fineTuneEpochs, epochs > 0 {
                var train = accepted.train
                train.standardise(Standardisation(means: task.featureMeans, scales: task.featureScales))
                var settings = LocalTrainingSettings()
                settings.epochs = epochs
                settings.learningRate = self.settings.learningRate
                var scaffold: LocalTrainer.Scaffold?
                var shuffle = SimulationRandom(seed: 0xf17e)
                own.parameters = try LocalTrainer(settings: settings).train(own, on: train, scaffold: &scaffold, shuffle: &shuffle).parameters
            }
            report.personalised = true
            report.personalisedAccuracy = own.evaluate(test).accuracy
        }
        report.accuracy = result.accuracy
        report.loss = result.logLoss
        report.examples = UInt64(test.count)
        if governor.policy.allows(.sliceMetrics) {
            let cells = SliceEvaluation.cells(plan, rows: accepted.test)
            report.slices = SliceEvaluation.figures(model, on: test, cells: cells, minRows: governor.policy.minSliceRows).map(\.proto)
        }
        try await reportSpent(task.planHash, plan, into: &report)
        logger.info("model evaluated", metadata: ["silo": "\(siloID)", "plan": "\(task.planHash.prefix(12))",
                                                  "accuracy": "\(result.accuracy)", "epsilon": "\(report.epsilonSpent)"])
    }

    /// The final evaluation of a silo whose policy does not release it exactly: with DP (noisy
    /// counts, their DP event committed first) when it gives a noise multiplier, else none at all.
    private func evaluateWithDP(_ model: Network, on test: Dataset, _ task: Fedgate_V1_EvaluateTask, _ accepted: AcceptedPlan,
                                into report: inout Fedgate_V1_EvaluationReport) async throws {
        guard let z = governor.policy.evaluationNoiseMultiplier, !model.regression else {
            throw GatewayError.evaluationNotReleased(regression: model.regression)
        }
        let release = try EvaluationRelease(noiseMultiplier: z)
        let right = Int((model.evaluate(test).accuracy * Double(test.count)).rounded())
        try await reservations.spend(release.event, plan: task.planHash, round: task.round, datasets: accepted.plan.datasets)
        var noise = GaussianNoiseGenerator()
        let (accuracy, rows) = release.release(correct: right, rows: test.count, noise: &noise)
        (report.accuracy, report.examples) = (accuracy, UInt64(rows))
        try await reportSpent(task.planHash, accepted.plan, into: &report)
        logger.info("model evaluated, released with DP", metadata: ["silo": "\(siloID)", "plan": "\(task.planHash.prefix(12))",
                                                                  "noise_multiplier": "\(z)", "epsilon": "\(report.epsilonSpent)"])
    }

    /// A regression model's figures in the target's own units: its output and the held-out targets
    /// (standardised like the training rows') mapped back through the consortium's target standardisation.
    private func evaluateRegression(_ model: Network, on rows: Dataset, _ task: Fedgate_V1_EvaluateTask, _ accepted: AcceptedPlan,
                                    into report: inout Fedgate_V1_EvaluationReport) async throws {
        guard task.targetScale > 0, task.targetScale.isFinite, task.targetMean.isFinite else {
            throw GatewayError.targetStandardisationMissing(plan: task.planHash)
        }
        var test = rows
        test.standardiseTarget(mean: task.targetMean, scale: task.targetScale)
        let figures = model.evaluateRegression(test, targetMean: task.targetMean, targetScale: task.targetScale)
        (report.rmse, report.mae, report.r2, report.examples) = (figures.rmse, figures.mae, figures.r2, UInt64(test.count))
        try await reportSpent(task.planHash, accepted.plan, into: &report)
        logger.info("model evaluated", metadata: ["silo": "\(siloID)", "plan": "\(task.planHash.prefix(12))",
                                                  "rmse": "\(figures.rmse)", "epsilon": "\(report.epsilonSpent)"])
    }

    /// The ε this silo's ledger committed for the plan, and its per-plan cap, into the report.
    func reportSpent(_ hash: String, _ plan: TrainingPlan, into report: inout Fedgate_V1_EvaluationReport) async throws {
        let spent = try await governor.ledger.backend.entries(dataset: settings.dataset)
            .filter { $0.planHash == hash && $0.state == .committed }.map(\.event)
        report.epsilonSpent = spent.isEmpty ? 0 : try epsilon(of: .composed(spent), delta: plan.dp.delta)
        report.epsilonCap = governor.policy.datasets[settings.dataset]?.caps.perPlan ?? 0
    }
}
