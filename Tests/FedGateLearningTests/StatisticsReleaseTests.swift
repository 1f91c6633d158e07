import FedGatePrivacy
import Testing
@testable import FedGateLearning

/// A silo's statistics release: the sums it noises, the noise, and the consortium's standardisation
/// from several releases.
@Suite("The statistics release: bounded sums, Gaussian noise, a standardisation from noisy parts")
struct StatisticsReleaseTests {
    static let ranges: [StatisticsRelease.Range] = [.init(lower: 0, upper: 10), .init(lower: -5, upper: 5), .init(lower: 100, upper: 300)]

    static func rows(_ values: [[Float]], classes: Int = 2) throws -> Dataset {
        try Dataset(featureNames: ["a", "b", "c"], labelName: "y", features: values.flatMap { $0 },
                    labels: values.indices.map { $0 % classes }, classCount: classes)
    }

    /// Rows drawn from `rng`, some outside the ranges (the release clamps them).
    static func randomRows(_ n: Int, _ rng: inout SimulationRandom) throws -> Dataset {
        try rows((0..<n).map { _ in [Float.random(in: -5...15, using: &rng), Float.random(in: -50...50, using: &rng), Float.random(in: 0...1e4, using: &rng)] })
    }

    @Test("one row added or removed, however extreme, moves (count, sums, squares) by at most the sensitivity √(1 + 5d/16)")
    func sensitivityBound() throws {
        let release = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 1)
        #expect(abs(release.sensitivity - (1 + 3 * 5.0 / 16).squareRoot()) < 1e-12)
        var rng = SimulationRandom(seed: 11)
        var largest = 0.0
        for trial in 0..<300 {
            let base = try Self.randomRows(1 + trial % 20, &rng)
            // The extreme row: every feature at a corner of its range, or far outside it.
            let corner: [Float] = trial % 2 == 0 ? [10, 5, 300] : [-1e6, 1e6, -1e6]
            let extra = [Float.random(in: 0...1, using: &rng) < 0.5 ? corner : [Float.random(in: -20...20, using: &rng), 0, 200]]
            let grown = try Self.rows(stride(from: 0, to: base.features.count, by: 3).map { Array(base.features[$0..<$0 + 3]) } + extra)
            let (a, b) = (release.exactSums(base), release.exactSums(grown))
            var squared = (b.count - a.count) * (b.count - a.count)
            for j in 0..<3 {
                squared += (b.sums[j] - a.sums[j]) * (b.sums[j] - a.sums[j]) + (b.squares[j] - a.squares[j]) * (b.squares[j] - a.squares[j])
            }
            largest = max(largest, squared.squareRoot())
            #expect(squared.squareRoot() <= release.sensitivity + 1e-9, "trial \(trial): moved \(squared.squareRoot())")
        }
        // The bound is reached (a corner row): the noise is not sized for a smaller change than a row makes.
        #expect(largest > release.sensitivity - 1e-6, "largest move \(largest) of \(release.sensitivity)")
    }

    @Test("the noise on every coordinate has mean 0 and standard deviation multiplier × sensitivity")
    func noiseLevel() throws {
        let release = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 2)
        var rng = SimulationRandom(seed: 3)
        let data = try Self.randomRows(50, &rng)
        let exact = release.exactSums(data)
        var noise = RepeatableNoise(seed: 99).noise
        let trials = 4000
        var sum = [Double](repeating: 0, count: 7), square = [Double](repeating: 0, count: 7)
        for _ in 0..<trials {
            let r = release.release(data, noise: &noise)
            let deviations = [r.count - exact.count] + (0..<3).map { r.sums[$0] - exact.sums[$0] } + (0..<3).map { r.squares[$0] - exact.squares[$0] }
            for (k, d) in deviations.enumerated() { sum[k] += d; square[k] += d * d }
            #expect(r.classes == 2)
        }
        for k in 0..<7 {
            let mean = sum[k] / Double(trials), sd = (square[k] / Double(trials) - mean * mean).squareRoot()
            // Standard errors: σ/√n for the mean (5 of them allowed), about σ/√(2n) for the deviation.
            #expect(abs(mean) < 5 * release.sigma / Double(trials).squareRoot(), "coordinate \(k): mean \(mean)")
            #expect(abs(sd / release.sigma - 1) < 0.06, "coordinate \(k): sd \(sd) vs σ \(release.sigma)")
        }
    }

    @Test("with little noise the consortium's standardisation is the pooled mean and deviation of the silos' rows")
    func combinesLikeThePool() throws {
        let release = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 0.01)
        var rng = SimulationRandom(seed: 5)
        // Inside the ranges, so clamping changes nothing.
        let silos = try (0..<3).map { s in
            try Self.rows((0..<(200 + 100 * s)).map { _ in
                [Float.random(in: 2...8, using: &rng) + Float(s), Float.random(in: -3...1, using: &rng), Float.random(in: 150...250, using: &rng)]
            })
        }
        var noise = RepeatableNoise(seed: 1).noise
        let combined = try release.standardisation(combining: silos.map { release.release($0, noise: &noise) })
        let all = silos.flatMap { d in (0..<d.count).map { Array(d.features[$0 * 3..<$0 * 3 + 3]) } }
        let pooled = Standardisation(of: try Self.rows(all))
        for j in 0..<3 {
            let width = Self.ranges[j].upper - Self.ranges[j].lower
            #expect(abs(Double(combined.means[j] - pooled.means[j])) < 1e-3 * width, "mean \(j): \(combined.means[j]) vs \(pooled.means[j])")
            #expect(abs(Double(combined.scales[j] / pooled.scales[j]) - 1) < 0.01, "scale \(j): \(combined.scales[j]) vs \(pooled.scales[j])")
        }
    }

    @Test("whatever the noise, means stay inside the ranges and scales between a twentieth and a half of their width")
    func clampedUnderHeavyNoise() throws {
        let release = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 500)
        var rng = SimulationRandom(seed: 8)
        var noise = RepeatableNoise(seed: 2).noise
        for _ in 0..<50 {
            let parts = try (0..<3).map { _ in release.release(try Self.randomRows(5, &rng), noise: &noise) }
            let s = try release.standardisation(combining: parts)
            for (j, r) in Self.ranges.enumerated() {
                let width = r.upper - r.lower
                #expect(Double(s.means[j]) >= r.lower - 1e-6 && Double(s.means[j]) <= r.upper + 1e-6)
                #expect(Double(s.scales[j]) >= 0.05 * width * (1 - 1e-6) && Double(s.scales[j]) <= 0.5 * width * (1 + 1e-6))
            }
        }
    }

    @Test("ranges upside down, infinite or a multiplier ≤ 0 are refused; parts of the wrong shape or with NaN are named")
    func refusals() throws {
        #expect(throws: PrivacyError.self) { try StatisticsRelease(ranges: [.init(lower: 1, upper: 1)], noiseMultiplier: 1) }
        #expect(throws: PrivacyError.self) { try StatisticsRelease(ranges: [.init(lower: 0, upper: .infinity)], noiseMultiplier: 1) }
        #expect(throws: PrivacyError.self) { try StatisticsRelease(ranges: [.init(lower: -1e308, upper: 1e308)], noiseMultiplier: 1) }
        #expect(throws: PrivacyError.self) { try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 0) }
        let release = try StatisticsRelease(ranges: Self.ranges, noiseMultiplier: 1)
        #expect(release.event == .gaussian(noiseMultiplier: 1))
        let good = ReleasedStatistics(count: 10, sums: [0, 0, 0], squares: [1, 1, 1], classes: 2)
        #expect(good.problem(features: 3...3, classes: 1...10) == nil)
        #expect(ReleasedStatistics(count: 10, sums: [0, 0], squares: [1, 1], classes: 2).problem(features: 3...3, classes: 1...10)?.contains("2 feature sums") == true)
        #expect(ReleasedStatistics(count: 10, sums: [0, .nan, 0], squares: [1, 1, 1], classes: 2).problem(features: 3...3, classes: 1...10)?.contains("feature 2") == true)
        #expect(ReleasedStatistics(count: .infinity, sums: [0, 0, 0], squares: [1, 1, 1], classes: 2).problem(features: 3...3, classes: 1...10)?.contains("row count") == true)
        #expect(ReleasedStatistics(count: 10, sums: [0, 0, 0], squares: [1, 1, 1], classes: 4_000_000).problem(features: 3...3, classes: 1...10)?.contains("classes") == true)
        // A negative noisy count or square is what noise does to a small silo: accepted.
        #expect(ReleasedStatistics(count: -3, sums: [0, 0, 0], squares: [-1, 1, 1], classes: 2).problem(features: 3...3, classes: 1...10) == nil)
        #expect(throws: DatasetError.self) { try release.standardisation(combining: []) }
    }
}
