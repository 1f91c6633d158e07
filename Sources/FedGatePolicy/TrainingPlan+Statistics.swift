import FedGateData
import FedGateLearning
import FedGatePrivacy
import Yams

/// A plan's `statistics:`: how each silo releases the statistics the consortium standardises with
/// (`StatisticsRelease`), before the first round, with DP and accounted in its own ledger.
///
/// ```yaml
/// statistics:
///   noise_multiplier: 2.0                      # the Gaussian mechanism's σ / sensitivity
///   bounds: { age: [18, 100], bmi: [10, 70] }  # without a schema: each feature column's range
/// ```
/// With a schema, a numeric column's range is its `bounds`; boolean, one-hot and indicator inputs
/// have [0, 1]. Values outside a range are clamped for the release (a schema refuses such rows).
extension TrainingPlan {
    public struct Statistics: Sendable, Equatable, Codable {
        public var noiseMultiplier: Double
        /// Per column (plans without a schema): [lower, upper].
        public var bounds: [String: [Double]]?

        public init(noiseMultiplier: Double, bounds: [String: [Double]]? = nil) {
            (self.noiseMultiplier, self.bounds) = (noiseMultiplier, bounds)
        }
    }

    static func statistics(_ r: YAMLReader, _ node: Yams.Node, columns: [String], schema: Bool) throws -> Statistics {
        let m = try r.map(node, "statistics")
        try m.only(["noise_multiplier", "bounds"])
        let z = try r.double(try m.require("noise_multiplier", "the noise multiplier of the statistics release"),
                             "statistics.noise_multiplier", 0.01...1000, "a noise multiplier between 0.01 and 1000")
        guard let boundsNode = m.optional("bounds") else { return Statistics(noiseMultiplier: z) }
        if schema {
            throw r.error(boundsNode, "statistics.bounds", "is for plans without a schema; give each numeric column's bounds under schema.columns")
        }
        let bm = try r.map(boundsNode, "statistics.bounds")
        var bounds: [String: [Double]] = [:]
        for entry in bm.entries {
            let path = "statistics.bounds.\(entry.key)"
            guard columns.contains(entry.key) else {
                throw r.error(entry.keyNode, path, "names no column of the plan's columns")
            }
            let b = try range(r, entry.value, path)
            guard b.lower < b.upper, (b.upper - b.lower).isFinite else { throw r.error(entry.value, path, "must have lower < upper") }
            bounds[entry.key] = [b.lower, b.upper]
        }
        return Statistics(noiseMultiplier: z, bounds: bounds)
    }

    /// What the statistics release spends at each silo (nil: the plan gives none).
    public var statisticsEvent: DPEvent? { statistics.map { .gaussian(noiseMultiplier: $0.noiseMultiplier) } }

    /// Why the plan's statistics cannot be released with DP, or nil: it gives no `statistics`, or
    /// a feature has no range. Checked when the plan is submitted; `statisticsRelease` checks the
    /// features a silo really has.
    public var statisticsProblem: String? {
        guard statistics != nil else {
            return "statistics: the plan gives no noise_multiplier for the silos' statistics release (each silo releases its feature "
                + "statistics with DP before the first round; see docs/privacy.md)"
        }
        if let schema {
            if let c = schema.columns.first(where: { if case .numeric = $0.kind { $0.bounds == nil } else { false } }) {
                return "schema.columns.\(c.name).bounds: a numeric column needs bounds: the silos' statistics are released with DP, whose noise is sized by the range"
            }
            if schema.target.task == .regression, schema.target.bounds == nil {
                return "schema.target.bounds: a regression target needs bounds: its mean and spread are part of the silos' statistics release"
            }
            return nil
        }
        let unbounded = columns.filter { statistics?.bounds?[$0] == nil }
        // A plan's columns may name the label as well (each silo drops its own): one column without bounds.
        guard unbounded.count <= 1 else {
            return "statistics.bounds: give [lower, upper] for each feature column; \(unbounded.prefix(5).joined(separator: ", "))"
                + (unbounded.count > 5 ? " and \(unbounded.count - 5) more have" : unbounded.count == 1 ? " has" : " have") + " none"
        }
        return nil
    }

    /// The release of the features named `names` (a silo's, in its order), with the plan's ranges.
    public func statisticsRelease(features names: [String]) throws -> StatisticsRelease {
        guard let statistics else { throw StatisticsUnusable(statisticsProblem ?? "statistics: missing") }
        let ranges: [StatisticsRelease.Range]
        if let schema {
            let encoding = SchemaEncoding(schema: schema)
            guard encoding.inputNames == names else {
                throw StatisticsUnusable("statistics: the rows' inputs (\(names.count)) are not the schema's \(encoding.inputNames.count)")
            }
            ranges = try schema.columns.flatMap { column -> [StatisticsRelease.Range] in
                var r: [StatisticsRelease.Range]
                switch column.kind {
                case .numeric:
                    guard let b = column.bounds else {
                        throw StatisticsUnusable("schema.columns.\(column.name).bounds: the statistics release needs the column's range")
                    }
                    r = [.init(lower: b.lower, upper: b.upper)]
                case .boolean: r = [.init(lower: 0, upper: 1)]
                case .categorical(let vocabulary): r = Array(repeating: .init(lower: 0, upper: 1), count: vocabulary.count)
                }
                if column.missing == .indicator { r.append(.init(lower: 0, upper: 1)) }
                return r
            }
            if schema.target.task == .regression {
                // The target is released (and standardised) as one more coordinate, last.
                guard let b = schema.target.bounds else {
                    throw StatisticsUnusable("schema.target.bounds: the statistics release needs the regression target's range")
                }
                return try StatisticsRelease(ranges: ranges + [.init(lower: b.lower, upper: b.upper)], noiseMultiplier: statistics.noiseMultiplier)
            }
        } else {
            ranges = try names.map { name in
                guard let b = statistics.bounds?[name], b.count == 2 else {
                    throw StatisticsUnusable("statistics.bounds: the plan gives no [lower, upper] for column '\(name)'")
                }
                return .init(lower: b[0], upper: b[1])
            }
        }
        return try StatisticsRelease(ranges: ranges, noiseMultiplier: statistics.noiseMultiplier)
    }

    /// The release of `count` features as the broker combines them: the schema's inputs, or the
    /// plan's columns that have bounds (a silo's label, among the columns, has none).
    public func statisticsRelease(featureCount count: Int) throws -> StatisticsRelease {
        if let schema { return try statisticsRelease(features: SchemaEncoding(schema: schema).inputNames) }
        let bounded = columns.filter { statistics?.bounds?[$0] != nil }
        guard bounded.count == count else {
            throw StatisticsUnusable("statistics.bounds: \(bounded.count) bounded columns, but the silos' statistics have \(count) features")
        }
        return try statisticsRelease(features: bounded)
    }
}

/// A plan's statistics release cannot be made for these features: names the field and what to give.
public struct StatisticsUnusable: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
