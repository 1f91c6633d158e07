import Foundation
import FedGatePrivacy

/// What a silo releases about a deployed model on its own rows (`monitoring:` in its policy): the
/// row count, how many rows carry a label and how many of those the model gets right, and one
/// histogram per watched input column, all in one Gaussian mechanism, so the broker can judge the
/// model's quality there and the drift of each column against the training rows without seeing a row.
///
/// Bins are cut in the consortium's standard units (the model's own standardisation): below −1,
/// −1 to 0, 0 to 1, and 1 and above. A row adds one to the count, at most one to the labelled and
/// to the right counts, and one to exactly one bin of each watched histogram, so the L2 sensitivity
/// is √(3 + watched columns). Pure: no I/O.
public struct MonitoringRelease: Sendable, Equatable {
    /// Bin edges in standard units; a value equal to an edge falls in the bin above it.
    public static let edges: [Float] = [-1, 0, 1]
    public static var bins: Int { edges.count + 1 }

    public let noiseMultiplier: Double
    /// The watched model inputs, by position.
    public let watched: [Int]

    public init(noiseMultiplier: Double, watched: [Int]) throws {
        try PrivacyError.require(noiseMultiplier.isFinite && noiseMultiplier > 0, "monitoring.noise_multiplier",
                                 "must be a finite number > 0, got \(noiseMultiplier)")
        try PrivacyError.require(Set(watched).count == watched.count && watched.allSatisfy { $0 >= 0 }, "watch",
                                 "names a column twice or a negative position: \(watched)")
        self.noiseMultiplier = noiseMultiplier
        self.watched = watched
    }

    public var sensitivity: Double { (3 + Double(watched.count)).squareRoot() }
    public var sigma: Double { noiseMultiplier * sensitivity }
    /// What one release spends.
    public var event: DPEvent { .gaussian(noiseMultiplier: noiseMultiplier) }
    /// Values in one release: rows, labelled, right, then each watched column's bins.
    public var length: Int { 3 + watched.count * Self.bins }

    /// The bin of a standardised value.
    public static func bin(_ value: Float) -> Int {
        var b = 0
        while b < edges.count, value >= edges[b] { b += 1 }
        return b
    }

    /// The exact counts of `rows` (standardised model inputs) with, per row, whether the model got
    /// it right (nil: the row carries no label).
    public func counts(_ rows: [[Float]], right: [Bool?]) -> [Double] {
        precondition(rows.count == right.count, "one outcome per row")
        var out = [Double](repeating: 0, count: length)
        out[0] = Double(rows.count)
        for (row, outcome) in zip(rows, right) {
            if let outcome {
                out[1] += 1
                if outcome { out[2] += 1 }
            }
            for (k, column) in watched.enumerated() where row.indices.contains(column) {
                out[3 + k * Self.bins + Self.bin(row[column])] += 1
            }
        }
        return out
    }

    /// `counts` with Gaussian noise of σ = noise multiplier × sensitivity on every value.
    public func release(_ counts: [Double], noise: inout GaussianNoiseGenerator) -> [Double] {
        let z = noise.normals(counts.count)
        return zip(counts, z).map { $0 + sigma * Double($1) }
    }
}

/// A monitoring release read back: the figures a broker judges by (all noisy).
public struct MonitorFigures: Sendable, Equatable {
    public let rows: Double
    public let labelled: Double
    /// The right count over the labelled count, within 0…1; nil when fewer than `minLabelled` rows
    /// carry a label (the noise would decide it).
    public let accuracy: Double?
    /// Each watched column's bins.
    public let histograms: [[Double]]

    public struct Malformed: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(released values: [Double], columns: Int, minLabelled: Double = 10) throws {
        let expected = 3 + columns * MonitoringRelease.bins
        guard values.count == expected else {
            throw Malformed(description: "holds \(values.count) values; \(columns) watched column\(columns == 1 ? "" : "s") make \(expected)")
        }
        guard values.allSatisfy(\.isFinite) else { throw Malformed(description: "holds a value that is not a finite number") }
        (rows, labelled) = (values[0], values[1])
        accuracy = labelled >= minLabelled ? min(max(values[2] / labelled, 0), 1) : nil
        histograms = (0..<columns).map { k in Array(values[(3 + k * MonitoringRelease.bins)..<(3 + (k + 1) * MonitoringRelease.bins)]) }
    }

    /// How surprising this accuracy is if the model's true accuracy were `floor`: the one-sided
    /// p-value of the shortfall, from the binomial spread of the labelled rows and the noise σ on the
    /// right and labelled counts carried through their ratio (variance σ²(1 + a²)/n²). nil without
    /// an accuracy. A quality failure needs the accuracy under the floor and this under the significance.
    public func accuracyPValue(floor: Double, sigma: Double) -> Double? {
        guard let accuracy, labelled > 0 else { return nil }
        let variance = floor * (1 - floor) / labelled + sigma * sigma * (1 + floor * floor) / (labelled * labelled)
        guard variance > 0 else { return accuracy < floor ? 0 : 1 }
        return 0.5 * erfc((floor - accuracy) / (2 * variance).squareRoot())
    }
}

/// A column's drift between a reference histogram and a current one, both noisy counts: the
/// population stability index (how large the shift is) and how surprising it is under "the same
/// population", given both samples' sizes and both releases' noise.
public struct DriftFigure: Sendable, Equatable {
    public let psi: Double
    /// Σ (p − q)² / v over the bins, v the variance of p − q under the same population: the
    /// multinomial part π(1 − π)(1/n + 1/m) — π the pooled proportion — and the noise part σ²/n² + τ²/m².
    public let statistic: Double
    /// P(statistic this large or larger) under the same population, from χ² with as many degrees
    /// of freedom as bins (one more than the multinomial part has: the noise is independent per bin).
    public let pValue: Double

    /// Drift is declared when the shift is both large (PSI over `maxPSI`) and not the noise's doing
    /// (p-value under `significance`): a small window's PSI alone rises by chance.
    public func drifted(maxPSI: Double, significance: Double = 0.001) -> Bool { psi > maxPSI && pValue < significance }

    public init(reference: [Double], referenceSigma: Double, current: [Double], currentSigma: Double) {
        psi = PopulationStability.index(reference: reference, current: current)
        let r = reference.map { max($0, 0) }, c = current.map { max($0, 0) }
        let m = max(r.reduce(0, +), 1), n = max(c.reduce(0, +), 1)
        var t = 0.0
        for (a, b) in zip(c, r) {
            let pooled = min(max((a + b) / (n + m), 0.5 / (n + m)), 1)
            let variance = pooled * (1 - pooled) * (1 / n + 1 / m) + currentSigma * currentSigma / (n * n) + referenceSigma * referenceSigma / (m * m)
            t += (a / n - b / m) * (a / n - b / m) / max(variance, 1e-12)
        }
        statistic = t
        pValue = ChiSquare.survival(t, degrees: reference.count)
    }
}

/// The χ² distribution's upper tail, for whole degrees of freedom.
public enum ChiSquare {
    /// P(X ≥ x) for X ~ χ²(k): the regularised upper incomplete gamma Q(k/2, x/2), by its finite
    /// sums (even k: e^{−x/2} Σ (x/2)^j / j!; odd k: erfc(√(x/2)) plus e^{−x/2} Σ (x/2)^{j+½} / Γ(j+3/2)).
    public static func survival(_ x: Double, degrees k: Int) -> Double {
        precondition(k >= 1, "at least one degree of freedom")
        guard x > 0 else { return 1 }
        let h = x / 2
        var sum = 0.0
        if k % 2 == 0 {
            var term = 1.0
            for j in 0..<(k / 2) {
                if j > 0 { term *= h / Double(j) }
                sum += term
            }
            return min(1, exp(-h) * sum)
        }
        var term = (h / Double.pi).squareRoot() * 2   // (x/2)^{1/2} / Γ(3/2)
        for j in 0..<((k - 1) / 2) {
            if j > 0 { term *= h / (Double(j) + 0.5) }
            sum += term
        }
        return min(1, erfc(h.squareRoot()) + exp(-h) * sum)
    }
}

/// The population stability index of a column: Σ (p − q) · ln(p / q) over its bins, p the current
/// proportions and q the reference's. 0 is no change; by the usual reading under 0.1 is stable,
/// 0.1 to 0.25 a moderate shift and above 0.25 a significant one. Noisy counts are taken as they
/// are, negative ones as 0, and every proportion is floored at `floor` so that an empty bin does
/// not make the index infinite.
public enum PopulationStability {
    public static func index(reference: [Double], current: [Double], floor: Double = 0.01) -> Double {
        precondition(reference.count == current.count && !reference.isEmpty, "the same bins on both sides")
        func proportions(_ counts: [Double]) -> [Double] {
            let kept = counts.map { max($0, 0) }
            let total = kept.reduce(0, +)
            guard total > 0 else { return [Double](repeating: 1 / Double(counts.count), count: counts.count) }
            let floored = kept.map { max($0 / total, floor) }
            let sum = floored.reduce(0, +)
            return floored.map { $0 / sum }
        }
        let (q, p) = (proportions(reference), proportions(current))
        return zip(p, q).reduce(0) { $0 + ($1.0 - $1.1) * log($1.0 / $1.1) }
    }
}
