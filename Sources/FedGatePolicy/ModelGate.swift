import FedGateLearning

/// One silo's evaluation of a candidate model on its held-out rows, with the privacy it spent.
public struct SiloEvaluation: Sendable, Equatable, Codable {
    public var silo: String
    public var accuracy: Double
    public var examples: Int
    /// ε the silo's ledger committed for the plan, and its per-plan cap.
    public var epsilonSpent: Double
    public var epsilonCap: Double
    /// With personalisation: the accuracy of the silo's own model (its local layers, fine-tuned) on the same rows.
    public var personalisedAccuracy: Double?
    /// Accuracy per slice cell (`sex=female`) with its held-out rows; cells below the silo's least
    /// size are not reported.
    public var slices: [SliceFigure] = []
    /// A regression model's figures, in the target's units (then `accuracy` means nothing).
    public var rmse: Double?
    public var mae: Double?
    public var r2: Double?

    public init(silo: String, accuracy: Double, examples: Int, epsilonSpent: Double, epsilonCap: Double, personalisedAccuracy: Double? = nil,
                rmse: Double? = nil, mae: Double? = nil, r2: Double? = nil) {
        self.silo = silo
        self.accuracy = accuracy
        self.examples = examples
        self.epsilonSpent = epsilonSpent
        self.epsilonCap = epsilonCap
        self.personalisedAccuracy = personalisedAccuracy
        (self.rmse, self.mae, self.r2) = (rmse, mae, r2)
    }
}

/// A federated evaluation: per silo, pooled over silos (weighted by their held-out examples), and
/// its spread between silos as a fairness delta.
public struct EvaluationSummary: Sendable, Equatable {
    /// By silo id.
    public let silos: [SiloEvaluation]

    public init(_ silos: [SiloEvaluation]) { self.silos = silos.sorted { $0.silo < $1.silo } }

    /// Accuracy over all silos' held-out rows together; nil when no silo evaluated any row.
    public var pooledAccuracy: Double? {
        let n = silos.reduce(0) { $0 + $1.examples }
        guard n > 0 else { return nil }
        return silos.reduce(0.0) { $0 + $1.accuracy * Double($1.examples) } / Double(n)
    }

    /// Accuracy per slice cell over every silo that reported the cell (weighted by its rows), by cell name.
    public var pooledSlices: [String: (accuracy: Double, examples: Int)] {
        var sums: [String: (Double, Int)] = [:]
        for s in silos { for f in s.slices { sums[f.slice, default: (0, 0)].0 += f.accuracy * Double(f.examples); sums[f.slice, default: (0, 0)].1 += f.examples } }
        return sums.filter { $0.value.1 > 0 }.mapValues { (accuracy: $0.0 / Double($0.1), examples: $0.1) }
    }

    /// Best slice cell's pooled accuracy minus the worst's; nil with fewer than two cells.
    public var sliceGap: Double? {
        let accuracies = pooledSlices.values.map(\.accuracy)
        guard accuracies.count >= 2, let best = accuracies.max(), let worst = accuracies.min() else { return nil }
        return best - worst
    }

    /// A regression model's evaluation: every silo reported RMSE.
    public var isRegression: Bool { !silos.isEmpty && silos.allSatisfy { $0.rmse != nil } }

    /// RMSE over all silos' held-out rows together (the root of the examples-weighted mean of
    /// their squared errors); nil without regression figures.
    public var pooledRMSE: Double? { weighted { $0.rmse.map { $0 * $0 } }.map { $0.squareRoot() } }
    /// MAE over all silos' held-out rows together.
    public var pooledMAE: Double? { weighted(\.mae) }
    /// The silos' R², weighted by their held-out rows (each silo's R² is about its own mean; this
    /// is their weighted mean, not the R² of the pooled rows).
    public var meanR2: Double? { weighted(\.r2) }

    private func weighted(_ figure: (SiloEvaluation) -> Double?) -> Double? {
        let present = silos.filter { $0.examples > 0 && figure($0) != nil }
        let n = present.reduce(0) { $0 + $1.examples }
        guard n > 0 else { return nil }
        return present.reduce(0.0) { $0 + figure($1)! * Double($1.examples) } / Double(n)
    }

    /// Best silo's accuracy minus the worst's (0 with one silo); nil with none.
    public var fairnessDelta: Double? {
        let accuracies = silos.filter { $0.examples > 0 }.map(\.accuracy)
        guard let best = accuracies.max(), let worst = accuracies.min() else { return nil }
        return best - worst
    }
}

/// The plan's gate on its final model: whether it becomes a registry version.
public struct GateDecision: Sendable, Equatable {
    public let passed: Bool
    /// Why it did not pass (empty when it did).
    public let reasons: [String]

    public init(passed: Bool, reasons: [String]) {
        self.passed = passed
        self.reasons = reasons
    }
}

public enum ModelGate {
    /// Passes when silos evaluated the model, its pooled accuracy reaches `minAccuracy`, and it is
    /// not more than `maxDrop` below the current version's accuracy. Every failed rule is reported.
    public static func decide(_ summary: EvaluationSummary, minAccuracy: Double?, maxDrop: Double?, currentAccuracy: Double?,
                              maxSliceGap: Double? = nil) -> GateDecision {
        guard !summary.isRegression else { return GateDecision(passed: true, reasons: []) }
        guard let accuracy = summary.pooledAccuracy else {
            return GateDecision(passed: false, reasons: ["no silo evaluated the model on held-out rows"])
        }
        var reasons: [String] = []
        if let limit = maxSliceGap {
            if let gap = summary.sliceGap {
                if gap > limit { reasons.append("the slices' accuracies are \(format(gap)) apart, more than the plan's \(format(limit))") }
            } else {
                reasons.append("fewer than two slice cells were reported (cells below a silo's least size are withheld): the plan's max_slice_gap cannot be checked")
            }
        }
        if let minimum = minAccuracy, accuracy < minimum {
            reasons.append("accuracy \(format(accuracy)) is below the plan's minimum \(format(minimum))")
        }
        if let drop = maxDrop, let current = currentAccuracy, accuracy < current - drop {
            reasons.append("accuracy \(format(accuracy)) is \(format((current - accuracy) * 100, digits: 1)) points below the current version's "
                           + "\(format(current)); the plan allows \(format(drop * 100, digits: 1))")
        }
        return GateDecision(passed: reasons.isEmpty, reasons: reasons)
    }

    /// A regression model's gate: passes when silos evaluated it, its pooled RMSE is at most
    /// `maxRMSE` and the silos' R² (weighted mean) at least `minR2`. Every failed rule is reported.
    public static func decideRegression(_ summary: EvaluationSummary, maxRMSE: Double?, minR2: Double?) -> GateDecision {
        guard let rmse = summary.pooledRMSE, let r2 = summary.meanR2 else {
            return GateDecision(passed: false, reasons: ["no silo evaluated the model on held-out rows"])
        }
        var reasons: [String] = []
        if let maximum = maxRMSE, rmse > maximum { reasons.append("RMSE \(format(rmse)) is above the plan's maximum \(format(maximum))") }
        if let minimum = minR2, r2 < minimum { reasons.append("R² \(format(r2)) is below the plan's minimum \(format(minimum))") }
        return GateDecision(passed: reasons.isEmpty, reasons: reasons)
    }

    private static func format(_ x: Double, digits: Int = 4) -> String {
        let scale = pow10(digits)
        return "\((x * scale).rounded() / scale)"
    }

    private static func pow10(_ n: Int) -> Double { (0..<n).reduce(1.0) { x, _ in x * 10 } }
}
