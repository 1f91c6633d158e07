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
        if let schema = root.optional("schema") {
            throw r.error(schema, "schema", "a statistics plan reads numeric columns (with their bounds); statistics over a schema's categories are not built yet")
        }
        try refuseTraining(r, root, kind: "a statistics plan (kind: statistics)",
                           allowing: ["kind", "purpose", "datasets", "columns", "statistics", "histograms", "min_cell", "quorum", "broker", "deadlines"])
        var plan = try trainingNothing(r, root, model: "none", does: "release statistics")
        let statisticsNode = try root.require("statistics", "noise_multiplier and each column's bounds")
        let statistics = try Self.statistics(r, statisticsNode, columns: plan.columns, schema: false)
        if let missing = plan.columns.first(where: { statistics.bounds?[$0] == nil }) {
            throw r.error(statisticsNode, "statistics.bounds", "gives no [lower, upper] for column '\(missing)': the noise is sized by every column's range")
        }
        plan.statistics = statistics
        var histograms: [String: [Double]] = [:]
        if let node = root.optional("histograms") {
            let hm = try r.map(node, "histograms")
            for entry in hm.entries {
                let path = "histograms.\(entry.key)"
                guard plan.columns.contains(entry.key) else { throw r.error(entry.keyNode, path, "names no column of the plan's columns") }
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
