import FedGatePrivacy
import Testing
@testable import FedGateLearning

/// Linear regression: a numeric target, squared error, its metrics, and the statistics release
/// that standardises the target with the features.
@Suite("Linear regression: the model, its gradient, its metrics and its target's release")
struct RegressionTests {
    /// y = 3 x₀ − 2 x₁ + 0.5 + noise of standard deviation `spread`.
    static func synthetic(_ n: Int, spread: Float = 0.1, seed: UInt64 = 1) throws -> Dataset {
        var rng = SimulationRandom(seed: seed)
        var features: [Float] = [], targets: [Float] = []
        for _ in 0..<n {
            let x0 = Float.random(in: -1...1, using: &rng), x1 = Float.random(in: -1...1, using: &rng)
            features += [x0, x1]
            targets.append(3 * x0 - 2 * x1 + 0.5 + spread * Float(rng.normal()))
        }
        return try Dataset(featureNames: ["x0", "x1"], labelName: "y", features: features, targets: targets)
    }

    @Test("a linear model has one output per row, the prediction itself, and needs exactly one 'class'")
    func shape() throws {
        let net = try Network(kind: .linear, inputs: 2, classes: 1, seed: 0)
        #expect(net.layerSizes == [2, 1] && net.parameters.count == 3 && net.regression)
        #expect(throws: DatasetError.self) { try Network(kind: .linear, inputs: 2, classes: 2, seed: 0) }
        #expect(try ModelKind(parsing: "linear") == .linear && ModelKind.linear.description == "linear")
        var ws = Network.Workspace(net)
        var p = net
        p.parameters = [2, -1, 0.25]
        #expect(p.forward([1, 3], &ws) == [2 - 3 + 0.25])
    }

    @Test("the squared-error gradient matches finite differences")
    func gradient() throws {
        var net = try Network(kind: .linear, inputs: 3, classes: 1, seed: 0)
        net.parameters = [0.3, -0.7, 1.1, 0.2]
        var ws = Network.Workspace(net)
        let x: [Float] = [0.5, -1.5, 2], y: Float = 1.25
        var g = [Float](repeating: 0, count: 4)
        let loss = net.lossAndGradient(x[...], target: y, &ws, into: &g)
        let z = 0.3 * 0.5 + 0.7 * 1.5 + 1.1 * 2 + 0.2 as Float
        #expect(abs(loss - (z - y) * (z - y) / 2) < 1e-5)
        for k in 0..<4 {
            var plus = net, minus = net
            plus.parameters[k] += 1e-2; minus.parameters[k] -= 1e-2
            var scratch = [Float](repeating: 0, count: 4)
            let numeric = (plus.lossAndGradient(x[...], target: y, &ws, into: &scratch) - minus.lossAndGradient(x[...], target: y, &ws, into: &scratch)) / 2e-2
            #expect(abs(numeric - g[k]) < 1e-2 * max(1, abs(g[k])), "parameter \(k): \(numeric) vs \(g[k])")
        }
    }

    @Test("trained without DP it finds the line; the metrics are the target's own units through its standardisation")
    func learnsTheLine() throws {
        var data = try Self.synthetic(400)
        // Standardise the target as a plan does, then train and score in the target's units.
        let targets = data.targets!
        let mean = targets.reduce(0, +) / Float(targets.count)
        let scale = (targets.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(targets.count)).squareRoot()
        data.standardiseTarget(mean: mean, scale: scale)
        var settings = LocalTrainingSettings()
        settings.epochs = 40
        settings.learningRate = 0.1
        var scaffold: LocalTrainer.Scaffold?
        var shuffle = SimulationRandom(seed: 2)
        let trained = try LocalTrainer(settings: settings).train(try Network(kind: .linear, inputs: 2, classes: 1, seed: 0), on: data,
                                                                 scaffold: &scaffold, shuffle: &shuffle)
        var net = try Network(kind: .linear, inputs: 2, classes: 1, seed: 0)
        net.parameters = trained.parameters
        let m = net.evaluateRegression(data, targetMean: mean, targetScale: scale)
        #expect(m.rmse < 0.13 && m.r2 > 0.99 && m.mae <= m.rmse, "\(m)")
        // Weights in the target's units: scale × w' per standardised target.
        #expect(abs(net.parameters[0] * scale - 3) < 0.05 && abs(net.parameters[1] * scale + 2) < 0.05, "\(net.parameters.map { $0 * scale })")
    }

    @Test("RMSE, MAE and R² by their definitions; R² is 0 for targets that do not vary")
    func metrics() {
        let m = RegressionMetrics(predictions: [1, 2, 3, 5], targets: [1, 2, 4, 4])
        #expect(m.examples == 4 && abs(m.mse - 0.5) < 1e-12 && abs(m.rmse - 0.5.squareRoot()) < 1e-12 && abs(m.mae - 0.5) < 1e-12)
        // Targets' mean 2.75, total sum of squares 6.75: R² = 1 − 2 / 6.75.
        #expect(abs(m.r2 - (1 - 2 / 6.75)) < 1e-12)
        #expect(RegressionMetrics(predictions: [1, 2], targets: [3, 3]).r2 == 0)
    }

    @Test("a regression data set keeps its targets through row subsets and column selection, and refuses a target that is not finite")
    func datasetCarriesTargets() throws {
        let data = try Self.synthetic(10)
        #expect(data.classCount == 1 && data.labels.allSatisfy { $0 == 0 })
        #expect(data.subset([3, 1]).targets == [data.targets![3], data.targets![1]])
        #expect(try data.selecting(features: ["x1"]).targets == data.targets)
        #expect(data.csv.split(separator: "\n")[1].hasSuffix(",\(data.targets![0])"))
        #expect(throws: DatasetError.self) { try Dataset(featureNames: ["a"], labelName: "y", features: [1, 2], targets: [1, .nan]) }
    }

    @Test("the statistics release carries the target as one more coordinate, and standardises it like a feature")
    func targetInTheRelease() throws {
        let data = try Self.synthetic(2000, spread: 0.5)
        let release = try StatisticsRelease(ranges: [.init(lower: -1, upper: 1), .init(lower: -1, upper: 1), .init(lower: -10, upper: 10)],
                                            noiseMultiplier: 0.01)
        var noise = RepeatableNoise(seed: 4).noise
        let s = try release.standardisation(combining: [release.release(data, noise: &noise)])
        let targets = data.targets!.map(Double.init)
        let mean = targets.reduce(0, +) / Double(targets.count)
        let sd = (targets.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(targets.count)).squareRoot()
        #expect(s.means.count == 3 && abs(Double(s.means[2]) - mean) < 0.01 && abs(Double(s.scales[2]) / sd - 1) < 0.01, "\(s)")
    }
}
