import Foundation
import FedGatePrivacy

/// A statistics plan's release at one silo (federated analytics): its row count, each column's
/// clamped and scaled sum and sum of squares (as `StatisticsRelease`), and for each histogram column
/// the number of rows in each bin (values clamped into the outer edges, so every row falls in exactly
/// one bin of each histogram), all in one Gaussian mechanism.
///
/// One row added or removed moves the count by 1, each sum by ≤ ½, each square by ≤ ¼ and exactly one
/// bin of each of the h histograms by 1: the L2 sensitivity is √(1 + 5d/16 + h). Every coordinate
/// gets N(0, (z·Δ)²); the silo records `gaussian(z)` in its ledger before the values leave. The
/// pooled results (`combine`) are post-processing: means and deviations clamped to what the ranges
/// allow, bins below the plan's least cell size withheld, quantiles read off the pooled histogram.
public struct AnalyticsRelease: Sendable, Equatable {
    /// A histogram of one column: its bins' edges, increasing (k + 1 edges make k bins).
    public struct Histogram: Sendable, Equatable {
        public let column: Int
        public let edges: [Double]
        public init(column: Int, edges: [Double]) { (self.column, self.edges) = (column, edges) }
        public var bins: Int { edges.count - 1 }

        /// The bin a value falls in (clamped into the outer edges; a value on an inner edge goes up).
        func bin(_ x: Double) -> Int {
            guard x > edges[0] else { return 0 }
            guard x < edges[edges.count - 1] else { return bins - 1 }
            var lo = 0, hi = bins - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if x >= edges[mid] { lo = mid } else { hi = mid - 1 }
            }
            return lo
        }
    }

    public let moments: StatisticsRelease
    public let histograms: [Histogram]

    public init(moments: StatisticsRelease, histograms: [Histogram]) throws {
        for h in histograms {
            guard moments.ranges.indices.contains(h.column) else {
                throw PrivacyError(field: "histograms", reason: "column \(h.column + 1) is not one of the \(moments.ranges.count) released columns")
            }
            guard h.edges.count >= 2, h.edges.count <= 1001, h.edges.allSatisfy(\.isFinite), zip(h.edges, h.edges.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw PrivacyError(field: "histograms", reason: "column \(h.column + 1): edges must be 2 to 1001 finite, increasing numbers")
            }
        }
        (self.moments, self.histograms) = (moments, histograms)
    }

    /// L2 sensitivity of the whole release to one row added or removed.
    public var sensitivity: Double { (1 + Double(moments.ranges.count) * 0.3125 + Double(histograms.count)).squareRoot() }
    public var sigma: Double { moments.noiseMultiplier * sensitivity }
    /// What one release spends.
    public var event: DPEvent { .gaussian(noiseMultiplier: moments.noiseMultiplier) }

    /// The exact bin counts of each histogram, before noise (exposed for tests of the mechanism).
    public func exactBins(_ data: Dataset) -> [[Double]] {
        histograms.map { h in
            var counts = [Double](repeating: 0, count: h.bins)
            for i in 0..<data.count { counts[h.bin(Double(data.features[i * data.featureCount + h.column]))] += 1 }
            return counts
        }
    }

    /// This silo's release, noised from `noise` (the CSPRNG's in service).
    public func release(_ data: Dataset, noise: inout GaussianNoiseGenerator) -> ReleasedAnalytics {
        let exact = moments.exactSums(data), bins = exactBins(data)
        let d = moments.ranges.count, total = bins.reduce(0) { $0 + $1.count }
        let z = noise.normals(1 + 2 * d + total).map { Double($0) * sigma }
        var at = 1 + 2 * d
        let noisyBins = bins.map { counts in counts.map { c in defer { at += 1 }; return c + z[at] } }
        return ReleasedAnalytics(count: exact.count + z[0], sums: (0..<d).map { exact.sums[$0] + z[1 + $0] },
                                 squares: (0..<d).map { exact.squares[$0] + z[1 + d + $0] }, bins: noisyBins)
    }

    /// The consortium's figures from the silos' releases.
    public func combine(_ parts: [ReleasedAnalytics], minCell: Double) throws -> AnalyticsResult {
        let d = moments.ranges.count
        guard !parts.isEmpty else { throw DatasetError(file: nil, line: nil, reason: "no silo's statistics to combine") }
        for (i, p) in parts.enumerated() {
            if let problem = p.problem(columns: d, bins: histograms.map(\.bins)) {
                throw DatasetError(file: nil, line: nil, reason: "statistics \(i + 1) of \(parts.count): \(problem)")
            }
        }
        let count = parts.reduce(0) { $0 + $1.count }
        let columns = moments.pooled(count: count, sums: parts.map(\.sums), squares: parts.map(\.squares), leastScale: 0)
            .map { AnalyticsResult.Column(mean: $0.mean, deviation: $0.deviation) }
        let pooled = histograms.indices.map { k in (0..<histograms[k].bins).map { b in parts.reduce(0) { $0 + $1.bins[k][b] } } }
        let results = zip(histograms, pooled).map { h, counts in
            AnalyticsResult.HistogramResult(column: h.column, edges: h.edges, counts: counts.map { $0 >= minCell ? $0 : nil },
                                            quartiles: Self.quantiles([0.25, 0.5, 0.75], edges: h.edges, counts: counts))
        }
        return AnalyticsResult(count: count, columns: columns, histograms: results)
    }

    /// Quantiles read off a histogram: the bin where the cumulative count (negative noisy counts as
    /// 0) reaches q of the total, interpolated linearly inside it; nil when the histogram holds nothing.
    public static func quantiles(_ qs: [Double], edges: [Double], counts: [Double]) -> [Double]? {
        let c = counts.map { max($0, 0) }, total = c.reduce(0, +)
        guard total > 0 else { return nil }
        return qs.map { q in
            var below = 0.0
            for (b, v) in c.enumerated() where v > 0 {
                if below + v >= q * total { return edges[b] + (q * total - below) / v * (edges[b + 1] - edges[b]) }
                below += v
            }
            return edges[edges.count - 1]
        }
    }
}

/// One silo's analytics release: noisy, so counts are real numbers and may be anything.
public struct ReleasedAnalytics: Sendable, Equatable {
    public let count: Double
    public let sums: [Double]
    public let squares: [Double]
    public let bins: [[Double]]

    public init(count: Double, sums: [Double], squares: [Double], bins: [[Double]]) {
        (self.count, self.sums, self.squares, self.bins) = (count, sums, squares, bins)
    }

    /// Why these cannot be a release of this plan (nil when they can): the sizes, then every value
    /// finite and within what noise around a possible value can reach (2⁴⁰ rows).
    public func problem(columns: Int, bins: [Int]) -> String? {
        guard sums.count == columns, squares.count == columns else { return "\(sums.count) sums and \(squares.count) squares; the plan has \(columns) columns" }
        guard self.bins.map(\.count) == bins else { return "histograms of \(self.bins.map(\.count)) bins; the plan's have \(bins)" }
        let limit = Double(1 << 40)
        let values = [count] + sums + squares + self.bins.joined()
        guard values.allSatisfy({ $0.isFinite && abs($0) <= limit }) else { return "a value that is not a finite number within 2^40" }
        return nil
    }
}

/// What a statistics plan found, pooled over the silos: the noisy row count, each column's mean and
/// standard deviation in its own units, and each histogram's pooled noisy counts (nil: below the
/// least cell size, withheld) with the quartiles read off it.
public struct AnalyticsResult: Sendable, Equatable {
    public struct Column: Sendable, Equatable {
        public let mean: Double
        public let deviation: Double
    }
    public struct HistogramResult: Sendable, Equatable {
        public let column: Int
        public let edges: [Double]
        public let counts: [Double?]
        /// The 25th, 50th and 75th percentiles; nil when the pooled histogram holds nothing.
        public let quartiles: [Double]?
    }
    public let count: Double
    public let columns: [Column]
    public let histograms: [HistogramResult]
}
