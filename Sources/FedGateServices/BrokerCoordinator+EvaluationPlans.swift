import FedGateData
import FedGateLearning
import FedGatePolicy
import FedGateStore
import Foundation

/// Evaluation plans (`kind: evaluate`): a registry version scored at every silo that accepts the
/// plan, on its held-out rows, per silo and per slice; nothing is trained and no version is made.
/// The plan is admitted like a training plan (round 0's offer, approvals waited for), the version's
/// stored file is sent as it is (its SHA-256 is the registry's), the silos' reports are judged by
/// the plan's gate, and the gate's record (`model.gate`, round 0) says what they found.
extension BrokerCoordinator {
    /// The registry version an evaluation plan names, as a file to serve and a model to read its
    /// shape from; refused at submission when the version is missing or is not the plan's model.
    func registryModel(_ plan: TrainingPlan) async throws -> (file: ModelFile, scorer: ModelScorer) {
        guard let number = plan.evaluates else { throw PlanUnsupported("the plan evaluates no registry version (model_version)") }
        let versions = try await store.modelVersions()
        guard let version = versions.first(where: { $0.version == number }) else {
            throw PlanUnsupported("model_version: the registry has no version \(number) (it has \(versions.map { "\($0.version)" }.joined(separator: ", ")))")
        }
        guard let content = try await store.modelContent(sha256: version.contentSHA256) else {
            throw PlanUnsupported("model_version: version \(number)'s file is missing from the store")
        }
        let scorer: ModelScorer
        do { scorer = try ModelScorer(file: content) } catch { throw PlanUnsupported("model_version: version \(number)'s file cannot be read: \(error)") }
        let kind = try ModelKind(parsing: plan.model)
        guard scorer.network.kind == kind else {
            throw PlanUnsupported("model: version \(number) is a \(scorer.network.kind) model, not \(plan.model)")
        }
        let inputs = scorer.network.layerSizes[0]
        let readable = plan.schema.map { SchemaEncoding(schema: $0).inputNames.count } ?? plan.columns.count
        // Without a schema a silo's label may be among the columns (it is dropped from the inputs).
        guard inputs == readable || (plan.schema == nil && inputs == readable - 1) else {
            throw PlanUnsupported("columns: version \(number) takes \(inputs) inputs; the plan's columns make \(readable)")
        }
        let dimension = scorer.network.parameters.count
        let file = ModelFile(head: Array(content.prefix(content.count - 4 * dimension)), parameters: scorer.network.parameters, chunkBytes: chunkBytes)
        guard file.sha256 == version.contentSHA256 else {
            throw PlanUnsupported("model_version: version \(number)'s file does not end with its parameters; it cannot be served as stored")
        }
        return (file, scorer)
    }

    /// Runs an evaluation plan: admission, the version sent to the silos that accepted, their
    /// reports judged by the plan's gate (audited), the figures in the plan's status.
    func runEvaluation(_ plan: TrainingPlan, text: String, hash: String) async throws {
        let (file, scorer) = try await registryModel(plan)
        let accepted = try await admit(plan, text: text, hash: hash).accepted
        plans[hash]?.layerSizes = scorer.network.layerSizes
        let evaluations = try await collectEvaluations(plan, hash: hash, round: 0, model: scorer.network, file: file, features: scorer.standardisation,
                                                       target: scorer.target.map { (Float($0.mean), Float($0.scale)) },
                                                       participants: Set(accepted), resumed: false)
        let promotion = ModelPromotion(store: runStore, brokerID: settings.brokerID, wallClock: settings.wallClock, logger: logger)
        let (summary, gate) = try await promotion.judge(plan, hash: hash, round: 0, evaluations: evaluations)
        plans[hash]?.evaluation = summary
        plans[hash]?.gate = gate
        plans[hash]?.modelVersion = plan.evaluates
        logger.info("registry version evaluated", metadata: ["plan": "\(hash.prefix(12))", "version": "\(plan.evaluates ?? 0)",
                                                             "silos": "\(summary.silos.map(\.silo))", "gate": "\(gate.passed)"])
    }
}

/// Statistics plans (`kind: statistics`): each silo's release comes with its acceptance of the
/// admission offer (its ledger committed the release's DP event first); the broker pools the
/// releases of the silos that accepted into the plan's figures (`AnalyticsRelease.combine`), keeps
/// them in its status and audits which silos' releases they pool (`statistics.pooled`).
extension BrokerCoordinator {
    func runStatistics(_ plan: TrainingPlan, text: String, hash: String) async throws {
        let admitted = try await admit(plan, text: text, hash: hash)
        let release = try plan.analyticsRelease(features: plan.analyticsInputs)
        var parts: [ReleasedAnalytics] = [], silos: [String] = []
        let sizes = release.histograms.map(\.bins)
        for (silo, m) in admitted.releases.sorted(by: { $0.key < $1.key }) {
            let part = ReleasedAnalytics(m, histograms: sizes)
            if let problem = part.problem(columns: plan.analyticsInputs.count, bins: sizes) {
                // Left out of the pool, and said so: the silo's release does not fit the plan.
                try await runStore.audit(.refused(.reply, .init(reason: "a statistics release that does not fit the plan: \(problem)", plan: hash, round: 0)),
                                         actor: settings.brokerID, subject: silo, at: now())
                continue
            }
            parts.append(part)
            silos.append(silo)
        }
        guard parts.count >= plan.quorum else {
            throw PlanUnsupported("only \(parts.count) silos released statistics that fit the plan; its quorum is \(plan.quorum)")
        }
        let result = try release.combine(parts, minCell: plan.analytics?.minCell ?? 10)
        plans[hash]?.analytics = (silos, plan.analyticsInputs, result)
        try await runStore.audit(.statisticsPooled(.init(silos: silos, count: result.count,
                                                         means: Dictionary(uniqueKeysWithValues: zip(plan.analyticsInputs, result.columns.map(\.mean))))),
                                 actor: settings.brokerID, subject: hash, at: now())
        logger.info("statistics pooled", metadata: ["plan": "\(hash.prefix(12))", "silos": "\(silos)", "count": "\(result.count)"])
    }
}
