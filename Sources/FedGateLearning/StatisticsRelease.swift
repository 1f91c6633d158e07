import FedGatePrivacy

/// How a silo releases the statistics the consortium standardises with: its row count and, per
/// feature, the sum and the sum of squares of the value clamped into the plan's stated range and
/// centred and scaled by it (x' = (clamp(x) − midpoint) / width, so x' ∈ [−½, ½]), with Gaussian
/// noise of standard deviation `noiseMultiplier` × the release's sensitivity on every coordinate.
///
/// Adding or removing one row moves the vector (count, sums, squares) by at most
/// √(1 + d/4 + d/16) in L2 (1 for the count, |x'| ≤ ½ for each sum, x'² ≤ ¼ for each square): the
/// sensitivity. The ranges are the plan's (public), so the release is the Gaussian mechanism with
/// that multiplier, `event`, which the silo records in its ledger before the values leave.
public struct StatisticsRelease: Sendable, Equatable {
    /// The range a feature's values are clamped into (the plan's `bounds`).
    public struct Range: Sendable, Equatable {
        public let lower: Double
        public let upper: Double

        public init(lower: Double, upper: Double) { (self.lower, self.upper) = (lower, upper) }

        var midpoint: Double { lower / 2 + upper / 2 }
        var width: Double { upper - lower }
    }

    public let ranges: [Range]
    public let noiseMultiplier: Double

    /// The least standard deviation a released feature is given, as a share of its range: noise
    /// can drive a small silo's variance estimate to nothing or below, and a feature divided by a
    /// near-zero scale would swamp every other input.
    public static let leastScale = 0.05

    public init(ranges: [Range], noiseMultiplier: Double) throws {
        for (j, r) in ranges.enumerated() where !(r.lower.isFinite && r.upper.isFinite && r.lower < r.upper && (r.upper - r.lower).isFinite) {
            throw PrivacyError(field: "statistics.bounds[\(j)]", reason: "must be finite with lower < upper, got [\(r.lower), \(r.upper)]")
        }
        try PrivacyError.require(noiseMultiplier.isFinite && noiseMultiplier > 0, "statistics.noise_multiplier",
                                 "must be a finite number > 0, got \(noiseMultiplier)")
        self.ranges = ranges
        self.noiseMultiplier = noiseMultiplier
    }

    /// L2 sensitivity of (count, sums, squares) to one row added or removed.
    public var sensitivity: Double { (1 + Double(ranges.count) * (0.25 + 0.0625)).squareRoot() }

    /// What one release spends: the Gaussian mechanism at the plan's multiplier.
    public var event: DPEvent { .gaussian(noiseMultiplier: noiseMultiplier) }

    /// The noise's standard deviation on every coordinate.
    public var sigma: Double { noiseMultiplier * sensitivity }

    /// This silo's release of `data`'s statistics, noised from `noise` (the CSPRNG's in service).
    public func release(_ data: Dataset, noise: inout GaussianNoiseGenerator) -> ReleasedStatistics {
        let exact = exactSums(data)
        let z = noise.normals(1 + 2 * ranges.count).map { Double($0) * sigma }
        let d = ranges.count
        return ReleasedStatistics(count: exact.count + z[0],
                                  sums: (0..<d).map { exact.sums[$0] + z[1 + $0] },
                                  squares: (0..<d).map { exact.squares[$0] + z[1 + d + $0] },
                                  classes: data.classCount)
    }

    /// The sums the noise is added to, before any noise: the count, and the clamped, centred,
    /// scaled features' sums and sums of squares (a regression target's last, as one more
    /// feature: its range is the last). Exposed for tests of the mechanism.
    public func exactSums(_ data: Dataset) -> (count: Double, sums: [Double], squares: [Double]) {
        let f = data.featureCount
        precondition(f + (data.targets == nil ? 0 : 1) == ranges.count, "the release has \(ranges.count) ranges for \(f) features")
        let d = ranges.count
        var sums = [Double](repeating: 0, count: d), squares = [Double](repeating: 0, count: d)
        for i in 0..<data.count {
            for j in 0..<d {
                let x = scaled(Double(j < f ? data.features[i * f + j] : data.targets![i]), j)
                sums[j] += x
                squares[j] += x * x
            }
        }
        return (Double(data.count), sums, squares)
    }

    /// x clamped into feature j's range, centred and scaled into [−½, ½].
    func scaled(_ x: Double, _ j: Int) -> Double {
        let r = ranges[j]
        return (min(max(x, r.lower), r.upper) - r.midpoint) / r.width
    }

    /// The consortium's standardisation from the silos' releases: means and variances of the
    /// scaled features from the summed releases, clamped to what values in the range can have
    /// (a mean inside it, a standard deviation from `leastScale` to half the range's width), then
    /// mapped back to the features' own units. Parts that do not fit the release are refused.
    public func standardisation(combining parts: [ReleasedStatistics]) throws -> Standardisation {
        let d = ranges.count
        for (i, p) in parts.enumerated() {
            if let problem = p.problem(features: d...d, classes: 1...Network.maximumClasses) {
                throw DatasetError(file: nil, line: nil, reason: "statistics \(i + 1) of \(parts.count): \(problem)")
            }
        }
        guard !parts.isEmpty else { throw DatasetError(file: nil, line: nil, reason: "no silo's statistics to combine") }
        let pooled = pooled(count: parts.reduce(0) { $0 + $1.count }, sums: parts.map(\.sums), squares: parts.map(\.squares), leastScale: Self.leastScale)
        return Standardisation(means: pooled.map { Float($0.mean) }, scales: pooled.map { Float($0.deviation) })
    }

    /// Each feature's mean and standard deviation in its own units from summed releases: the scaled
    /// mean clamped into [−½, ½], the scaled deviation into [`leastScale`, ½], then mapped back.
    func pooled(count: Double, sums: [[Double]], squares: [[Double]], leastScale: Double) -> [(mean: Double, deviation: Double)] {
        let n = max(count, 1)
        return ranges.indices.map { j in
            let mean = min(max(sums.reduce(0) { $0 + $1[j] } / n, -0.5), 0.5)
            let variance = min(max(squares.reduce(0) { $0 + $1[j] } / n - mean * mean, leastScale * leastScale), 0.25)
            return (ranges[j].midpoint + mean * ranges[j].width, variance.squareRoot() * ranges[j].width)
        }
    }
}

/// One silo's released statistics (`StatisticsRelease.release`): noisy, so the count is a real
/// number and may be anything; what the broker receives and combines.
public struct ReleasedStatistics: Sendable, Equatable {
    public let count: Double
    public let sums: [Double]
    public let squares: [Double]
    /// Classes of the label (so the consortium agrees on the output layer).
    public let classes: Int

    public init(count: Double, sums: [Double], squares: [Double], classes: Int) {
        (self.count, self.sums, self.squares, self.classes) = (count, sums, squares, classes)
    }

    /// Why these cannot be a release of a data set with `features` features and `classes` classes
    /// (nil when they can): the counts that size anything are checked first, then every value is
    /// finite and within what noise around a possible value can reach (2⁴⁰ rows).
    public func problem(features: ClosedRange<Int>, classes allowed: ClosedRange<Int>) -> String? {
        guard features.contains(sums.count) else {
            return "\(sums.count) feature sums; the plan's columns make \(features.lowerBound == features.upperBound ? "\(features.lowerBound)" : "\(features.lowerBound) or \(features.upperBound)")"
        }
        guard squares.count == sums.count else { return "\(sums.count) feature sums but \(squares.count) sums of squares" }
        guard allowed.contains(classes) else { return "\(classes) classes; expected \(allowed.lowerBound) to \(allowed.upperBound)" }
        let limit = Double(1 << 40)
        guard count.isFinite, abs(count) <= limit else { return "a row count of \(count)" }
        for j in 0..<sums.count where !(sums[j].isFinite && squares[j].isFinite && abs(sums[j]) <= limit && abs(squares[j]) <= limit) {
            return "feature \(j + 1): sum \(sums[j]) and sum of squares \(squares[j]) are not finite numbers within 2^40"
        }
        return nil
    }
}

/// A classification model's evaluation released with DP (a silo whose policy does not release it
/// exactly): the held-out row count and the count of rows classified right, each with Gaussian noise.
/// One row added or removed moves the pair by at most √2 in L2.
public struct EvaluationRelease: Sendable, Equatable {
    public let noiseMultiplier: Double

    public init(noiseMultiplier: Double) throws {
        try PrivacyError.require(noiseMultiplier.isFinite && noiseMultiplier > 0, "releases.evaluation_noise_multiplier",
                                 "must be a finite number > 0, got \(noiseMultiplier)")
        self.noiseMultiplier = noiseMultiplier
    }

    public var sensitivity: Double { 2.0.squareRoot() }
    public var sigma: Double { noiseMultiplier * sensitivity }
    /// What one release spends.
    public var event: DPEvent { .gaussian(noiseMultiplier: noiseMultiplier) }

    /// The noisy accuracy (the noisy right count over the noisy row count, within 0…1) and row
    /// count (rounded, at least 1).
    public func release(correct: Int, rows: Int, noise: inout GaussianNoiseGenerator) -> (accuracy: Double, rows: Int) {
        let z = noise.normals(2).map { Double($0) * sigma }
        let n = Double(rows) + z[0], c = Double(correct) + z[1]
        return (min(max(c / max(n, 1), 0), 1), Int(max(1, n.rounded())))
    }
}
