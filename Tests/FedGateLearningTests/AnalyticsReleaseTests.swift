import FedGatePrivacy
import Testing
@testable import FedGateLearning

/// A statistics plan's release: sums and histograms in one Gaussian mechanism, pooled figures.
@Suite("Federated analytics: counts, means, deviations, histograms and quartiles with DP")
struct AnalyticsReleaseTests {
    static let ranges = StatisticsReleaseTests.ranges
    /// Histograms of columns 0 ([0, 10] in five bins) and 2 ([100, 300] in four bins).
    static func release(_ z: Double) throws -> AnalyticsRelease {
        try AnalyticsRelease(moments: try StatisticsRelease(ranges: ranges, noiseMultiplier: z), histograms: [
            .init(column: 0, edges: [0, 2, 4, 6, 8, 10]), .init(column: 2, edges: [100, 150, 200, 250, 300]),
        ])
    }

    static func vector(_ r: AnalyticsRelease, _ data: Dataset) -> [Double] {
        let e = r.moments.exactSums(data)
        return [e.count] + e.sums + e.squares + r.exactBins(data).joined()
    }

    @Test("one row added, however extreme, moves the whole release by at most √(1 + 5d/16 + h), and a corner row reaches it")
    func sensitivityBound() throws {
        let release = try Self.release(1)
        #expect(abs(release.sensitivity - (1 + 3 * 5.0 / 16 + 2).squareRoot()) < 1e-12)
        var rng = SimulationRandom(seed: 5)
        var largest = 0.0
        for trial in 0..<300 {
            let base = try StatisticsReleaseTests.randomRows(1 + trial % 20, &rng)
            let corner: [Float] = trial % 2 == 0 ? [10, 5, 300] : [-1e6, 1e6, -1e6]
            let extra = [Float.random(in: 0...1, using: &rng) < 0.5 ? corner : [Float.random(in: -20...20, using: &rng), 0, 200]]
            let grown = try StatisticsReleaseTests.rows(stride(from: 0, to: base.features.count, by: 3).map { Array(base.features[$0..<$0 + 3]) } + extra)
            let moved = zip(Self.vector(release, base), Self.vector(release, grown)).reduce(0) { $0 + ($1.1 - $1.0) * ($1.1 - $1.0) }.squareRoot()
            largest = max(largest, moved)
            #expect(moved <= release.sensitivity + 1e-9, "trial \(trial): moved \(moved)")
        }
        #expect(largest > release.sensitivity - 1e-6, "largest move \(largest) of \(release.sensitivity)")
    }

    @Test("every row falls in exactly one bin of each histogram: values below or above the edges in the outer bins, an inner edge in the bin above it")
    func bins() throws {
        let release = try Self.release(1)
        let data = try StatisticsReleaseTests.rows([[-3, 0, 50], [0, 0, 100], [2, 0, 150], [9.99, 0, 299], [10, 0, 300], [42, 0, 1e6]])
        #expect(release.exactBins(data) == [[2, 1, 0, 0, 3], [2, 1, 0, 3]])
    }

    @Test("with little noise the pooled figures are the silos' rows pooled: count, means, deviations, bins and quartiles")
    func pooled() throws {
        let release = try Self.release(1e-9)
        var rng = SimulationRandom(seed: 8)
        let silos = try (0..<3).map { _ in try StatisticsReleaseTests.rows((0..<200).map { _ in
            [Float.random(in: 0...10, using: &rng), Float.random(in: -5...5, using: &rng), Float.random(in: 100...300, using: &rng)] }) }
        var noise = RepeatableNoise(seed: 1).noise
        let result = try release.combine(silos.map { release.release($0, noise: &noise) }, minCell: 0)
        #expect(abs(result.count - 600) < 1e-6)
        let all = silos.flatMap { s in (0..<s.count).map { Array(s.row($0)) } }
        for j in 0..<3 {
            let values = all.map { Double($0[j]) }
            let mean = values.reduce(0, +) / 600, sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 600).squareRoot()
            #expect(abs(result.columns[j].mean - mean) < 1e-4 * (1 + abs(mean)) && abs(result.columns[j].deviation - sd) < 1e-3 * (1 + sd),
                    "column \(j): \(result.columns[j]) vs \(mean), \(sd)")
        }
        let exact = silos.map(release.exactBins)
        for k in 0..<2 {
            let counts = (0..<release.histograms[k].bins).map { b in exact.reduce(0) { $0 + $1[k][b] } }
            #expect(zip(result.histograms[k].counts, counts).allSatisfy { abs(($0 ?? -1) - $1) < 1e-6 })
        }
        // Uniform values: the median of column 0 is near 5, its quartiles near 2.5 and 7.5.
        let q = try #require(result.histograms[0].quartiles)
        #expect(abs(q[0] - 2.5) < 0.4 && abs(q[1] - 5) < 0.4 && abs(q[2] - 7.5) < 0.4, "\(q)")
    }

    @Test("bins below the least cell size are withheld; the quartiles of a known histogram are interpolated inside their bins")
    func withheldAndQuantiles() throws {
        let release = try Self.release(1e-9)
        let data = try StatisticsReleaseTests.rows((0..<20).map { i in [i < 15 ? 1 : 9, 0, 120] })
        var noise = RepeatableNoise(seed: 2).noise
        let result = try release.combine([release.release(data, noise: &noise)], minCell: 10)
        #expect(result.histograms[0].counts.map { $0.map { $0.rounded() } } == [15, nil, nil, nil, nil], "the 5 rows in the last bin are withheld")
        // 10 rows in [0, 2) and 10 in [2, 4): the median is the edge 2, the quartiles 1 and 3.
        let q = try #require(AnalyticsRelease.quantiles([0.25, 0.5, 0.75], edges: [0, 2, 4], counts: [10, 10]))
        #expect(q == [1, 2, 3])
        #expect(AnalyticsRelease.quantiles([0.5], edges: [0, 1], counts: [-3]) == nil, "a histogram of nothing (noise below 0) has no quantiles")
    }

    @Test("edges that do not increase, a column that is not released and parts of the wrong shape are refused, naming the field")
    func refusals() throws {
        let moments = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 1)
        #expect { try AnalyticsRelease(moments: moments, histograms: [.init(column: 0, edges: [0, 5, 5])]) } throws: { "\($0)".contains("histograms") }
        #expect { try AnalyticsRelease(moments: moments, histograms: [.init(column: 7, edges: [0, 1])]) } throws: { "\($0)".contains("column 8") }
        let release = try Self.release(1)
        let wrong = ReleasedAnalytics(count: 3, sums: [0, 0, 0], squares: [0, 0, 0], bins: [[1, 2]])
        #expect { try release.combine([wrong], minCell: 0) } throws: { "\($0)".contains("histograms of [2] bins") }
        let nan = ReleasedAnalytics(count: .nan, sums: [0, 0, 0], squares: [0, 0, 0], bins: [[0, 0, 0, 0, 0], [0, 0, 0, 0]])
        #expect { try release.combine([nan], minCell: 0) } throws: { "\($0)".contains("finite") }
    }
}
