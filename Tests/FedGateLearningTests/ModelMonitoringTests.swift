import FedGatePrivacy
import Foundation
import Testing
@testable import FedGateLearning

@Suite("Monitoring a deployed model: the DP release and the population stability index")
struct ModelMonitoringTests {
    static func noise(_ seed: UInt64) -> GaussianNoiseGenerator { RepeatableNoise(seed: seed).noise }

    /// A standard normal draw (Box–Muller).
    static func gaussian(_ random: inout SimulationRandom) -> Float {
        let u = Double.random(in: Double.ulpOfOne..<1, using: &random), v = Double.random(in: 0..<1, using: &random)
        return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
    }

    @Test("values on an edge fall in the bin above it; below −1, −1…0, 0…1 and from 1 up are the four bins")
    func bins() {
        #expect([-3, -1.0001, -1, -0.5, 0, 0.99, 1, 7].map { MonitoringRelease.bin(Float($0)) } == [0, 0, 1, 1, 2, 2, 3, 3])
    }

    @Test("the counts are the rows, the labelled rows, the right ones, and one histogram per watched column in the watch's order")
    func counts() throws {
        let release = try MonitoringRelease(noiseMultiplier: 1, watched: [2, 0])
        let rows: [[Float]] = [[-2, 9, 0.5], [0.2, 9, 1.5], [1, 9, -1]]
        let counts = release.counts(rows, right: [true, false, nil])
        #expect(counts == [3, 2, 1, /* column 2 */ 0, 1, 1, 1, /* column 0 */ 1, 0, 1, 1])
        #expect(release.length == counts.count)
    }

    @Test("adding or removing any one row moves the counts by at most the stated sensitivity √(3 + watched), and a labelled right row reaches it")
    func sensitivity() throws {
        var random = SimulationRandom(seed: 11)
        for watched in [[], [0], [0, 3, 5], Array(0..<8)] {
            let release = try MonitoringRelease(noiseMultiplier: 2, watched: watched)
            let rows = (0..<40).map { _ in (0..<8).map { _ in Float.random(in: -3...3, using: &random) } }
            let right: [Bool?] = rows.indices.map { $0 % 3 == 0 ? nil : $0 % 3 == 1 }
            let all = release.counts(rows, right: right)
            var largest = 0.0
            for i in rows.indices {
                var fewer = rows, fewerRight = right
                fewer.remove(at: i)
                fewerRight.remove(at: i)
                let distance = zip(all, release.counts(fewer, right: fewerRight)).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                largest = max(largest, distance)
            }
            #expect(largest <= release.sensitivity + 1e-12 && abs(largest - release.sensitivity) < 1e-12, "watched \(watched): \(largest) vs \(release.sensitivity)")
            #expect(abs(release.sigma - 2 * release.sensitivity) < 1e-12 && release.event == .gaussian(noiseMultiplier: 2))
        }
    }

    @Test("the released values carry Gaussian noise of the stated σ: over 4000 values, their spread around the exact counts is σ within 5 %")
    func noise() throws {
        let release = try MonitoringRelease(noiseMultiplier: 1.5, watched: [0, 1, 2])
        var noise = Self.noise(3)
        var squares = 0.0, n = 0.0
        let exact = [Double](repeating: 50, count: release.length)
        for _ in 0..<(4000 / release.length + 1) {
            for (a, b) in zip(release.release(exact, noise: &noise), exact) { squares += (a - b) * (a - b); n += 1 }
        }
        #expect(abs((squares / n).squareRoot() / release.sigma - 1) < 0.05)
    }

    @Test("a release reads back as figures: accuracy only with enough labelled rows, within 0…1; a release of the wrong length or with a non-finite value is refused, naming why")
    func figures() throws {
        let f = try MonitorFigures(released: [100, 80, 84, 1, 2, 3, 4], columns: 1)
        #expect(f.rows == 100 && f.accuracy == 1 && f.histograms == [[1, 2, 3, 4]])
        #expect(try MonitorFigures(released: [100, 4, 3, 1, 2, 3, 4], columns: 1).accuracy == nil)
        #expect(throws: MonitorFigures.Malformed.self) { try MonitorFigures(released: [1, 2, 3], columns: 1) }
        #expect { try MonitorFigures(released: [1, 2, .nan, 1, 1, 1, 1], columns: 1) } throws: { "\($0)".contains("finite") }
    }

    @Test("the PSI is 0 for the same proportions whatever the counts, matches the formula worked by hand, grows with the shift, and stays finite with empty or negative bins")
    func psi() {
        #expect(abs(PopulationStability.index(reference: [10, 20, 30, 40], current: [20, 40, 60, 80])) < 1e-12)
        // p = (0.4, 0.3, 0.2, 0.1), q = (0.1, 0.2, 0.3, 0.4), worked by hand:
        let hand = 0.3 * log(4.0) + 0.1 * log(1.5) - 0.1 * log(2.0 / 3.0) - 0.3 * log(0.25)
        #expect(abs(PopulationStability.index(reference: [1, 2, 3, 4], current: [4, 3, 2, 1]) - hand) < 1e-12)
        let base: [Double] = [16, 34, 34, 16]
        let small = PopulationStability.index(reference: base, current: [14, 32, 36, 18])
        let large = PopulationStability.index(reference: base, current: [2, 10, 30, 58])
        #expect(small < 0.02 && large > 0.5 && small < large, "\(small) \(large)")
        let empty = PopulationStability.index(reference: base, current: [0, -3, 0, 100])
        #expect(empty.isFinite && empty > 1)
    }

    @Test("an accuracy's shortfall p-value: a half at the floor, small far under it, larger with more noise or fewer rows, and none without an accuracy")
    func accuracyShortfall() throws {
        let f = { (right: Double, labelled: Double) in try MonitorFigures(released: [labelled, labelled, right, 1, 1, 1, 1], columns: 1) }
        #expect(abs(try f(80, 100).accuracyPValue(floor: 0.8, sigma: 3)! - 0.5) < 1e-12)
        // 70 of 100 under a floor of 0.8, no noise: z = 0.1 / √(0.16 / 100) = 2.5, p = 0.0062 (the normal tail).
        #expect(abs(try f(70, 100).accuracyPValue(floor: 0.8, sigma: 0)! - 0.00620966532577613) < 1e-9)
        let quiet = try f(70, 100).accuracyPValue(floor: 0.8, sigma: 1)!, noisy = try f(70, 100).accuracyPValue(floor: 0.8, sigma: 10)!
        #expect(quiet < noisy && noisy > 0.05)
        #expect(try f(700, 1000).accuracyPValue(floor: 0.8, sigma: 3)! < 1e-10)
        #expect(try f(2, 5).accuracyPValue(floor: 0.8, sigma: 3) == nil, "too few labelled rows: no accuracy")
    }

    @Test("χ² upper tails match SciPy's chi2.sf for 1 to 7 degrees of freedom")
    func chiSquare() {
        // scipy.stats.chi2.sf(x, k), SciPy 1.x.
        let reference: [(Int, Double, Double)] = [
            (1, 0.5, 0.47950012218695337), (1, 12.8, 0.000346619351134667), (2, 3, 0.22313016014842982), (2, 30, 3.0590232050182594e-07),
            (3, 0.5, 0.9188914116546758), (3, 12.8, 0.005089698393436514), (4, 3, 0.5578254003710748), (4, 30, 4.894437128029217e-06),
            (5, 12.8, 0.025326835640591076), (7, 3, 0.8850022316431506), (7, 30, 9.495972508134177e-05)]
        for (k, x, p) in reference {
            #expect(abs(ChiSquare.survival(x, degrees: k) / p - 1) < 1e-9, "k \(k), x \(x): \(ChiSquare.survival(x, degrees: k)) vs \(p)")
        }
        #expect(ChiSquare.survival(0, degrees: 3) == 1)
    }

    @Test("with the noise a silo adds (z = 2, three watched columns, 190 fresh rows against 190 reference rows), no same-population window of 200 is declared drifted, and every window shifted by one and a half deviations is")
    func noiseAgainstShift() throws {
        let release = try MonitoringRelease(noiseMultiplier: 2, watched: [0, 1, 2])
        var random = SimulationRandom(seed: 5)
        var noise = Self.noise(6)
        func released(_ shift: Float) throws -> MonitorFigures {
            let rows = (0..<190).map { _ in (0..<3).map { _ in Self.gaussian(&random) + shift } }
            return try MonitorFigures(released: release.release(release.counts(rows, right: .init(repeating: nil, count: 190)), noise: &noise), columns: 3)
        }
        func drift(_ a: MonitorFigures, _ b: MonitorFigures, _ k: Int) -> DriftFigure {
            DriftFigure(reference: a.histograms[k], referenceSigma: release.sigma, current: b.histograms[k], currentSigma: release.sigma)
        }
        var same: [DriftFigure] = [], shifted: [DriftFigure] = []
        for _ in 0..<200 {
            let (reference, fresh, moved) = (try released(0), try released(0), try released(1.5))
            same += (0..<3).map { drift(reference, fresh, $0) }
            shifted.append(drift(reference, moved, 0))
        }
        let falseAlarms = same.filter { $0.drifted(maxPSI: 0.25) }.count
        print(String(format: "monitoring noise (z 2, 190 rows): same population PSI up to %.3f, p-value down to %.4f, %d of %d declared drifted; shifted 1.5 sd: PSI from %.3f, p-value up to %.2e",
                     same.map(\.psi).max()!, same.map(\.pValue).min()!, falseAlarms, same.count, shifted.map(\.psi).min()!, shifted.map(\.pValue).max()!))
        #expect(falseAlarms == 0 && shifted.allSatisfy { $0.drifted(maxPSI: 0.25) })
    }
}
