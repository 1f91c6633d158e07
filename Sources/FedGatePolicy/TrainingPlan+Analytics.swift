import FedGateLearning
import FedGatePrivacy
import Foundation
import Yams

/// `kind: statistics`: federated analytics. Each silo that accepts the plan releases, once, its row
/// count, each column's clamped sum and sum of squares and the bins of each histogram the plan asks
/// for, in one Gaussian mechanism (`AnalyticsRelease`) whose event its ledger commits before the
/// values leave; the broker pools them into means, deviations, histograms (cells below `min_cell`
/// withheld) and quartiles. Nothing is trained.
///
/// ```yaml
/// kind: statistics
/// purpose: research
/// datasets: [breast-cancer-2024]
/// columns: [mean_radius, mean_area]
/// statistics: { noise_multiplier: 4.0, bounds: { mean_radius: [6.9, 29], mean_area: [140, 2600] } }
/// histograms: { mean_radius: [6, 10, 14, 18, 22, 30] }
/// min_cell: 10
/// quorum: 3
/// broker: { region: eu-west, jurisdiction: EU }
/// deadlines: { round_seconds: 600 }
/// ```
extension TrainingPlan {
    public struct Analytics: Sendable, Equatable, Codable {
        /// Per column: the histogram's edges (increasing; k + 1 edges make k bins).
        public var histograms: [String: [Double]]
        /// Pooled bins with a smaller noisy count are withheld from the results.
        public var minCell: Double
    }

    /// Whether the plan is federated analytics (`kind: statistics`).
    public var isStatistics: Bool { analytics != nil }

    /// Whether the plan trains nothing (an evaluation or a statistics plan): the DP-SGD rules of a
    /// policy do not apply to it, and what it releases is reported at each data set's own δ.
    public var trainsNothing: Bool { isEvaluation || isStatistics }

    static func statisticsPlan(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> TrainingPlan {
        for key in ["rounds", "local_steps", "strategy", "dp", "secure_aggregation", "executor", "personalisation", "fedprox", "compression",
                    "model", "model_version", "evaluation", "slices"] where root.optional(key) != nil {
            throw r.error(root.optional(key), key, "a statistics plan (kind: statistics) trains and evaluates nothing: remove '\(key)'")
        }
        if let schema = root.optional("schema") {
            throw r.error(schema, "schema", "a statistics plan reads numeric columns (with their bounds); statistics over a schema's categories are not built yet")
        }
        try root.only(["kind", "purpose", "datasets", "columns", "statistics", "histograms", "min_cell", "quorum", "broker", "deadlines"])
        let datasets = try r.distinctStrings(try root.require("datasets", "the logical names of the data sets"), "datasets")
        guard !datasets.isEmpty else { throw r.error(root.optional("datasets"), "datasets", "must name at least one data set") }
        let columns = try r.distinctStrings(try root.require("columns", "the numeric columns to describe"), "columns")
        guard !columns.isEmpty else { throw r.error(root.optional("columns"), "columns", "must name at least one column") }
        let broker = try r.map(try root.require("broker", "region and jurisdiction of the broker"), "broker")
        try broker.only(["region", "jurisdiction"])
        let deadlines = try r.map(try root.require("deadlines", "round_seconds"), "deadlines")
        try deadlines.only(["round_seconds", "approval_seconds"])
        let statisticsNode = try root.require("statistics", "noise_multiplier and each column's bounds")
        let statistics = try Self.statistics(r, statisticsNode, columns: columns, schema: false)
        if let missing = columns.first(where: { statistics.bounds?[$0] == nil }) {
            throw r.error(statisticsNode, "statistics.bounds", "gives no [lower, upper] for column '\(missing)': the noise is sized by every column's range")
        }
        var plan = TrainingPlan(
            purpose: try r.string(try root.require("purpose", "why the statistics are asked for, e.g. research"), "purpose"),
            datasets: datasets, columns: columns, model: "none", executor: .builtin, rounds: 0, localSteps: 0, strategy: .fedavg,
            // No DP-SGD runs; the release's δ is the data set's own (the silo's policy), this one is only a placeholder.
            dp: DP(noiseMultiplier: nil, targetEpsilon: nil, clipNorm: 1, samplingRate: 1, delta: 1e-5),
            secureAggregation: false,
            quorum: try r.int(try root.require("quorum", "the fewest silos whose statistics are pooled"), "quorum", 1...100_000, "a whole number ≥ 1"),
            brokerRegion: try r.string(try broker.require("region", "the broker's region"), "broker.region"),
            brokerJurisdiction: try r.string(try broker.require("jurisdiction", "the broker's jurisdiction"), "broker.jurisdiction"),
            roundDeadlineSeconds: try r.int(try deadlines.require("round_seconds", "seconds the silos have to answer"), "deadlines.round_seconds",
                                            1...86_400 * 7, "seconds from 1 to 604800"),
            minAccuracy: nil,
            approvalWaitSeconds: try deadlines.optional("approval_seconds").map {
                try r.int($0, "deadlines.approval_seconds", 1...86_400 * 30, "seconds from 1 to 2592000 (30 days) to wait for silos' approvals") })
        plan.statistics = statistics
        var histograms: [String: [Double]] = [:]
        if let node = root.optional("histograms") {
            let hm = try r.map(node, "histograms")
            for entry in hm.entries {
                let path = "histograms.\(entry.key)"
                guard columns.contains(entry.key) else { throw r.error(entry.keyNode, path, "names no column of the plan's columns") }
                guard let items = entry.value.sequence, (2...1001).contains(items.count) else {
                    throw r.error(entry.value, path, "must list 2 to 1001 bin edges, increasing")
                }
                let edges = try items.map { try r.double($0, path, -1e300...1e300, "a number") }
                guard zip(edges, edges.dropFirst()).allSatisfy({ $0 < $1 }) else { throw r.error(entry.value, path, "edges must increase") }
                histograms[entry.key] = edges
            }
        }
        let minCell = try root.optional("min_cell").map { try r.double($0, "min_cell", 0...1e9, "a least cell size ≥ 0") } ?? 10
        plan.analytics = Analytics(histograms: histograms, minCell: minCell)
        return plan
    }

    /// The release a silo makes for a statistics plan over its columns `names` (in its order).
    public func analyticsRelease(features names: [String]) throws -> AnalyticsRelease {
        guard let analytics else { throw StatisticsUnusable("the plan is not a statistics plan") }
        let moments = try statisticsRelease(features: names)
        let histograms = names.enumerated().compactMap { j, name in
            analytics.histograms[name].map { AnalyticsRelease.Histogram(column: j, edges: $0) }
        }
        do { return try AnalyticsRelease(moments: moments, histograms: histograms) } catch let e as PrivacyError { throw StatisticsUnusable("\(e)") }
    }
}
