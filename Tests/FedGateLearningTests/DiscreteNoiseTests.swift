import Foundation
import Testing
@_spi(Testing) @testable import FedGateLearning
import FedGatePrivacy

@Suite("DP-SGD noise on a grid: the discrete Gaussian against floating-point attacks")
struct DiscreteNoiseTests {
    static func rng(_ seed: UInt64) -> ChaCha20Random { RepeatableNoise(seed: seed).integers }

    @Test("the grid step is C/2^k with the least k ≥ 10 that keeps γ√d within C/100, and rows are clipped to C − γ√d")
    func grid() throws {
        let small = try DiscreteNoise(clipNorm: 1, noiseMultiplier: 1, dimension: 31)
        #expect(small.step == 1.0 / 1024 && abs(small.rowClip - (1 - 31.0.squareRoot() / 1024)) < 1e-15)
        let digits = try DiscreteNoise(clipNorm: 2, noiseMultiplier: 1, dimension: 650)
        #expect(digits.step == 2.0 / 4096 && digits.step * 650.0.squareRoot() <= 2 * 0.01 && digits.step * 2 * 650.0.squareRoot() > 2 * 0.01)
        let large = try DiscreteNoise(clipNorm: 1, noiseMultiplier: 4, dimension: 1_000_000)
        #expect(large.step * 1000 <= 0.01 && large.rowClip >= 0.99)
    }

    @Test("every released coordinate is γ times an integer, whatever the sum; two sums that round alike are released bit for bit alike with the same draws")
    func onTheGrid() throws {
        let grid = try DiscreteNoise(clipNorm: 1, noiseMultiplier: 1.3, dimension: 200)
        var random = SimulationRandom(seed: 4)
        for trial in 0..<20 {
            let sum = (0..<200).map { _ in Float.random(in: -40...40, using: &random) }
            var a = sum, b = sum.map { v in
                // Move each value within its grid cell: only bits below the grid change.
                let cell = (Double(v) / grid.step).rounded() * grid.step
                return Float(cell + grid.step * Double.random(in: -0.49...0.49, using: &random))
            }
            var r1 = Self.rng(UInt64(trial)), r2 = Self.rng(UInt64(trial))
            grid.release(&a, using: &r1)
            grid.release(&b, using: &r2)
            #expect(a == b, "trial \(trial): the release depends on bits below the grid")
            #expect(a.allSatisfy { (Double($0) / grid.step).rounded() == Double($0) / grid.step }, "trial \(trial): off the grid")
        }
    }

    @Test("the noise has standard deviation σ·C (20 000 draws, within 3 %) and mean 0")
    func spread() throws {
        let grid = try DiscreteNoise(clipNorm: 0.5, noiseMultiplier: 1.1, dimension: 20_000)
        var zeros = [Float](repeating: 0, count: 20_000)
        var r = Self.rng(9)
        grid.release(&zeros, using: &r)
        let mean = zeros.reduce(0.0) { $0 + Double($1) } / 20_000
        let sd = (zeros.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / 20_000).squareRoot()
        #expect(abs(sd / 0.55 - 1) < 0.03 && abs(mean) < 0.02, "sd \(sd), mean \(mean)")
    }

    @Test("neighbouring sums (one row of norm at most C − γ√d apart) are at most C apart once rounded, and their difference is whole grid steps in every coordinate")
    func sensitivity() throws {
        let d = 300
        let grid = try DiscreteNoise(clipNorm: 1, noiseMultiplier: 1, dimension: d)
        var random = SimulationRandom(seed: 12)
        var largest = 0.0
        for _ in 0..<500 {
            let base = (0..<d).map { _ in Double.random(in: -5...5, using: &random) }
            var row = (0..<d).map { _ in Double.random(in: -1...1, using: &random) }
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            row = row.map { $0 / norm * grid.rowClip }
            let rounded = { (v: [Double]) in v.map { ($0 / grid.step).rounded() } }
            let (a, b) = (rounded(base), rounded(zip(base, row).map(+)))
            largest = max(largest, zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot() * grid.step)
        }
        #expect(largest <= 1 + 1e-12, "rounded neighbours \(largest) apart")
    }

    @Test("DP-SGD on the grid learns as well as with floating-point noise (digits, softmax, σ 1, within a point), and its canary audit stays under the claimed ε 4")
    func trainsAndAudits() throws {
        let data = ExampleData.digits
        var settings = LocalTrainingSettings()
        settings.learningRate = 0.5
        settings.dp = try DPSGDSettings(noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.05)
        settings.dpSteps = 150
        var scaffold: LocalTrainer.Scaffold?
        func accuracy(_ discrete: Bool, seed: UInt64) throws -> Double {
            var s = settings
            (s.discreteNoise, s.repeatableNoise) = (discrete, RepeatableNoise(seed: seed))
            var shuffle = SimulationRandom(seed: seed)
            var net = try Network(kind: .softmax, inputs: data.featureCount, classes: data.classCount, seed: 1)
            net.parameters = try LocalTrainer(settings: s).train(net, on: data, scaffold: &scaffold, shuffle: &shuffle).parameters
            return net.evaluate(data).accuracy
        }
        let continuous = try accuracy(false, seed: 1), discrete = try accuracy(true, seed: 1)
        print(String(format: "DP-SGD on digits, σ 1, 150 steps: floating-point noise %.4f, on the grid %.4f", continuous, discrete))
        #expect(abs(continuous - discrete) < 0.01, "continuous \(continuous), discrete \(discrete)")

        var training = LocalTrainingSettings()
        training.learningRate = 0.5
        let sigma = try NoiseCalibration.noiseMultiplier(targetEpsilon: 4, delta: 1e-5, samplingProbability: 0.05, steps: 100)
        training.dp = try DPSGDSettings(noiseMultiplier: sigma, clipNorm: 1, samplingRate: 0.05)
        (training.dpSteps, training.discreteNoise) = (100, true)
        var audit = PrivacyAudit.Settings()
        (audit.canaries, audit.guesses) = (400, 300)
        let result = try PrivacyAudit(settings: audit).run(kind: .logistic, data: ExampleData.breastCancer, training: training)
        #expect(result.empiricalEpsilon < 4, "\(result)")
    }
}
