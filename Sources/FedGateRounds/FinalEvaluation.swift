import FedGateLearning
/// The final evaluation of a plan's model as a value: which silos were asked (those that took
/// part), and what each answered. A silo answers once; a report nobody asked for is refused.
public struct FinalEvaluation<Report: Sendable>: Sendable {
    public let round: Int
    public let expected: Set<String>
    public private(set) var reports: [String: Report] = [:]

    public init(round: Int, expected: Set<String>) {
        self.round = round
        self.expected = expected
    }

    /// A silo's report for `round`; false (and nothing kept) when it was not asked, answers
    /// another round, or already answered.
    public mutating func receive(_ report: Report, from silo: String, round: Int) -> Bool {
        guard round == self.round, expected.contains(silo), reports[silo] == nil else { return false }
        reports[silo] = report
        return true
    }

    public var isComplete: Bool { reports.count == expected.count }
}

/// A silo's figures for a model on its held-out rows, checked before they count: an impossible
/// figure is that silo's failure to evaluate, never a figure in a report.
public struct EvaluationFigures: Sendable, Equatable {
    public var accuracy: Double
    public var examples: Int
    public var epsilonSpent: Double
    public var epsilonCap: Double
    public var personalisedAccuracy: Double?
    /// A regression model's figures (then `accuracy` is 0 and means nothing).
    public var regression: RegressionFigures?
    /// Accuracy per slice cell.
    public var slices: [SliceFigure]

    public init(accuracy: Double, examples: Int, epsilonSpent: Double, epsilonCap: Double, personalisedAccuracy: Double? = nil,
                regression: RegressionFigures? = nil, slices: [SliceFigure] = []) {
        (self.accuracy, self.examples, self.epsilonSpent, self.epsilonCap, self.personalisedAccuracy, self.regression, self.slices)
            = (accuracy, examples, epsilonSpent, epsilonCap, personalisedAccuracy, regression, slices)
    }

    /// Why the figures are impossible, or nil.
    public var problem: String? {
        guard accuracy.isFinite, (0...1).contains(accuracy) else { return "accuracy \(accuracy) is not in 0…1" }
        guard examples >= 1, examples <= 1 << 40 else { return "\(examples) held-out rows" }
        guard epsilonSpent.isFinite, epsilonSpent >= 0, epsilonCap.isFinite, epsilonCap >= 0 else {
            return "ε spent \(epsilonSpent) and cap \(epsilonCap) are not finite and non-negative"
        }
        if let p = personalisedAccuracy, !(p.isFinite && (0...1).contains(p)) {
            return "personalised accuracy \(p) is not in 0…1"
        }
        if let r = regression, let problem = r.problem { return problem }
        guard slices.count <= 256 else { return "\(slices.count) slice cells (at most 256)" }
        for cell in slices {
            guard (1...128).contains(cell.slice.utf8.count), cell.accuracy.isFinite, (0...1).contains(cell.accuracy), (1...examples).contains(cell.examples) else {
                return "slice cell '\(cell.slice.prefix(40))': accuracy \(cell.accuracy) on \(cell.examples) rows is not a cell of \(examples) held-out rows"
            }
        }
        return nil
    }
}

/// A regression model's figures on a silo's held-out rows, in the target's units.
public struct RegressionFigures: Sendable, Equatable, Codable {
    public var rmse: Double
    public var mae: Double
    public var r2: Double

    public init(rmse: Double, mae: Double, r2: Double) { (self.rmse, self.mae, self.r2) = (rmse, mae, r2) }

    /// Why the figures are impossible, or nil: errors finite and non-negative (MAE at most RMSE),
    /// R² finite and at most 1.
    public var problem: String? {
        guard rmse.isFinite, mae.isFinite, rmse >= 0, mae >= 0, mae <= rmse * (1 + 1e-9) + 1e-12 else {
            return "RMSE \(rmse) and MAE \(mae) are not finite, non-negative errors with MAE ≤ RMSE"
        }
        guard r2.isFinite, r2 <= 1 + 1e-9 else { return "R² \(r2) is not finite and at most 1" }
        return nil
    }
}
