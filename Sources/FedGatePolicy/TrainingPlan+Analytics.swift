import FedGateData
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
        try refuseTraining(r, root, kind: "a statistics plan (kind: statistics)",
                           allowing: ["kind", "purpose", "datasets", "columns", "schema", "statistics", "histograms", "min_cell", "quorum", "broker", "deadlines"])
        var plan = try trainingNothing(r, root, model: "none", does: "release statistics")
        plan.schema = try root.optional("schema").map { try schema(r, $0, columns: plan.columns) }
        let statisticsNode = try root.require("statistics", plan.schema == nil ? "noise_multiplier and each column's bounds" : "noise_multiplier")
        let statistics = try Self.statistics(r, statisticsNode, columns: plan.columns, schema: plan.schema != nil)
        if let schema = plan.schema {
            try checkStatisticsSchema(r, root, schema)
        } else if let missing = plan.columns.first(where: { statistics.bounds?[$0] == nil }) {
            throw r.error(statisticsNode, "statistics.bounds", "gives no [lower, upper] for column '\(missing)': the noise is sized by every column's range")
        }
        plan.statistics = statistics
        let numeric = plan.schema.map { $0.columns.filter { if case .numeric = $0.kind { true } else { false } }.map(\.name) } ?? plan.columns
        var histograms: [String: [Double]] = [:]
        if let node = root.optional("histograms") {
            let hm = try r.map(node, "histograms")
            for entry in hm.entries {
                let path = "histograms.\(entry.key)"
                guard numeric.contains(entry.key) else {
                    throw r.error(entry.keyNode, path, plan.schema == nil ? "names no column of the plan's columns"
                                  : "names no numeric column of the schema (a categorical column's counts are its shares already)")
                }
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

    /// A statistics plan's schema: every numeric column bounded (the noise is sized by the ranges),
    /// missing cells dropped (there are no consortium fill values before the statistics exist), and a
    /// classification target (the rows must carry it to be read; a regression target's release is not built).
    private static func checkStatisticsSchema(_ r: YAMLReader, _ root: YAMLReader.Map, _ schema: DataSchema) throws {
        let node = root.optional("schema")
        if let c = schema.columns.first(where: { if case .numeric = $0.kind { $0.bounds == nil } else { false } }) {
            throw r.error(node, "schema.columns.\(c.name).bounds", "a numeric column of a statistics plan needs bounds: the noise is sized by its range")
        }
        if let c = schema.columns.first(where: { $0.missing != .drop }) {
            throw r.error(node, "schema.columns.\(c.name).missing", "a statistics plan drops rows with missing cells (missing: drop): there are no consortium fill values yet")
        }
        if schema.target.task == .regression {
            throw r.error(node, "schema.target", "a statistics plan's target must be a classification one; give a numeric column under columns to describe it")
        }
    }

    /// The model inputs a statistics plan releases, in order: the plan's columns, or with a schema
    /// its encoded inputs (a categorical column's one-hot inputs, `sex=female`, whose means are the
    /// categories' shares).
    public var analyticsInputs: [String] { schema.map { SchemaEncoding(schema: $0).inputNames } ?? columns }

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
