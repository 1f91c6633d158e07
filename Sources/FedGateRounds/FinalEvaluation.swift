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

    public init(accuracy: Double, examples: Int, epsilonSpent: Double, epsilonCap: Double, personalisedAccuracy: Double? = nil) {
        (self.accuracy, self.examples, self.epsilonSpent, self.epsilonCap, self.personalisedAccuracy)
            = (accuracy, examples, epsilonSpent, epsilonCap, personalisedAccuracy)
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
        return nil
    }
}
