import FedGateLearning
import Foundation
import Yams

/// `kind: evaluate`: a plan that scores a registry version at every silo that accepts it, on the
/// silo's held-out rows, per silo and per slice, and trains nothing. It names the version
/// (`model_version`), the model kind and columns the version was trained on, the data sets and
/// purpose, the broker, a deadline, a quorum and, optionally, the gate and the slices. What leaves a
/// silo is its final evaluation: exactly when its policy lists `final_evaluation`, else as noisy
/// counts under `releases.evaluation_noise_multiplier` (a DP event in its ledger), else nothing.
extension TrainingPlan {
    static func evaluationPlan(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> TrainingPlan {
        try refuseTraining(r, root, kind: "an evaluation plan (kind: evaluate)",
                           allowing: ["kind", "model_version", "purpose", "datasets", "columns", "model", "quorum", "broker", "deadlines",
                                      "evaluation", "schema", "slices"])
        let version = try r.int(try root.require("model_version", "the registry version to evaluate"), "model_version",
                                1...Int(Int32.max), "a registry version number ≥ 1")
        let modelNode = try root.require("model", "the model kind of the version: logistic, softmax, mlp:H or linear")
        let model = try r.string(modelNode, "model")
        do { _ = try ModelKind(parsing: model) } catch let e as DatasetError { throw r.error(modelNode, "model", e.reason) }
        let gate = try root.optional("evaluation").map { try evaluationGate(r, $0) }
        var plan = try trainingNothing(r, root, model: model, does: "evaluate")
        (plan.minAccuracy, plan.maxAccuracyDrop) = (gate?.minAccuracy, gate?.maxDrop)
        plan.evaluates = version
        plan.schema = try root.optional("schema").map { try schema(r, $0, columns: plan.columns) }
        (plan.maxRMSE, plan.minR2, plan.maxSliceGap) = (gate?.maxRMSE, gate?.minR2, gate?.maxSliceGap)
        plan.slices = try root.optional("slices").map { try sliceColumns(r, $0, schema: plan.schema) }
        if plan.maxSliceGap != nil, plan.slices == nil {
            throw r.error(root.optional("evaluation"), "evaluation.max_slice_gap", "needs the plan's slices (slices: [column, …])")
        }
        return plan
    }

    /// Refuses any field outside `allowing`: a training plan's by name ("trains nothing: remove it"),
    /// any other as unknown.
    static func refuseTraining(_ r: YAMLReader, _ root: YAMLReader.Map, kind: String, allowing allowed: [String]) throws {
        for e in root.entries where !allowed.contains(e.key) && trainingKeys.contains(e.key) {
            throw r.error(e.keyNode, e.key, "\(kind) trains nothing: remove '\(e.key)'")
        }
        try root.only(allowed)
    }

    /// What every plan that trains nothing states (purpose, data sets, columns, quorum, broker,
    /// deadlines), as a plan with no DP-SGD: no rounds, and a δ only as a placeholder (what such a
    /// plan releases is reported at each data set's own δ).
    static func trainingNothing(_ r: YAMLReader, _ root: YAMLReader.Map, model: String, does verb: String) throws -> TrainingPlan {
        let datasets = try r.distinctStrings(try root.require("datasets", "the logical names of the data sets"), "datasets")
        guard !datasets.isEmpty else { throw r.error(root.optional("datasets"), "datasets", "must name at least one data set") }
        let columns = try r.distinctStrings(try root.require("columns", "the columns the plan reads"), "columns")
        guard !columns.isEmpty else { throw r.error(root.optional("columns"), "columns", "must name at least one column") }
        let broker = try r.map(try root.require("broker", "region and jurisdiction of the broker"), "broker")
        try broker.only(["region", "jurisdiction"])
        let deadlines = try r.map(try root.require("deadlines", "round_seconds"), "deadlines")
        try deadlines.only(["round_seconds", "approval_seconds"])
        return TrainingPlan(
            purpose: try r.string(try root.require("purpose", "why the plan is run, e.g. research"), "purpose"),
            datasets: datasets, columns: columns, model: model, executor: .builtin, rounds: 0, localSteps: 0, strategy: .fedavg,
            dp: DP(noiseMultiplier: nil, targetEpsilon: nil, clipNorm: 1, samplingRate: 1, delta: 1e-5),
            secureAggregation: false,
            quorum: try r.int(try root.require("quorum", "the fewest silos that must \(verb)"), "quorum", 1...100_000, "a whole number ≥ 1"),
            brokerRegion: try r.string(try broker.require("region", "the broker's region"), "broker.region"),
            brokerJurisdiction: try r.string(try broker.require("jurisdiction", "the broker's jurisdiction"), "broker.jurisdiction"),
            roundDeadlineSeconds: try r.int(try deadlines.require("round_seconds", "seconds the silos have"), "deadlines.round_seconds",
                                            1...86_400 * 7, "seconds from 1 to 604800"),
            minAccuracy: nil,
            approvalWaitSeconds: try deadlines.optional("approval_seconds").map {
                try r.int($0, "deadlines.approval_seconds", 1...86_400 * 30, "seconds from 1 to 2592000 (30 days) to wait for silos' approvals") })
    }
}
