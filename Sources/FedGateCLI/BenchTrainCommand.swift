import ArgumentParser
import FedGateLearning
import Foundation

extension BenchCommand {
    /// `fedgate bench train`: local training throughput with and without DP-SGD.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Local logistic-regression training throughput (examples/s), plain SGD vs DP-SGD (float noise, and on the grid), on synthetic rows."
        )

        @Option(help: "Synthetic rows.") var rows = 100_000
        @Option(help: "Features per row.") var features = 100
        @Option(help: "Repetitions; the best is reported.") var repetitions = 3
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func validate() throws {
            guard rows >= 10, features >= 1, repetitions >= 1 else {
                throw ValidationError("--rows must be ≥ 10, --features ≥ 1 and --repetitions ≥ 1")
            }
        }

        func run() throws {
            var rng = SimulationRandom(seed: 1)
            let truth = (0..<features).map { _ in rng.normal() }
            var x = [Float](), y = [Int]()
            x.reserveCapacity(rows * features)
            for _ in 0..<rows {
                var z = 0.0
                for j in 0..<features { let v = rng.normal(); x.append(Float(v)); z += v * truth[j] }
                y.append(z + rng.normal() > 0 ? 1 : 0)
            }
            let data = try Dataset(featureNames: (0..<features).map { "x\($0)" }, labelName: "y", features: x, labels: y, classCount: 2)
            let net = try Network(kind: .logistic, inputs: features, classes: 2, seed: 0)

            var plain = LocalTrainingSettings()
            plain.batchSize = 256
            var dp = plain
            dp.dp = try DPSGDSettings(noiseMultiplier: 1.0, clipNorm: 1.0, samplingRate: 256.0 / Double(rows))

            func examplesPerSecond(_ settings: LocalTrainingSettings) throws -> (rate: Double, accuracy: Double) {
                var best = Double.infinity, accuracy = 0.0
                for _ in 0..<repetitions {
                    var shuffle = SimulationRandom(seed: 2)
                    var scaffold: LocalTrainer.Scaffold?
                    let clock = ContinuousClock(), start = clock.now
                    let update = try LocalTrainer(settings: settings).train(net, on: data, scaffold: &scaffold, shuffle: &shuffle)
                    let d = clock.now - start
                    best = min(best, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
                    var trained = net
                    trained.parameters = update.parameters
                    accuracy = trained.evaluate(data).accuracy
                }
                return (Double(rows) / best, accuracy)
            }
            var grid = dp
            grid.discreteNoise = true
            let p = try examplesPerSecond(plain), d = try examplesPerSecond(dp), g = try examplesPerSecond(grid)
            let result: [String: Any] = [
                "build": BenchCommand.DP.buildKind, "rows": rows, "features": features, "batch_size": 256,
                "sgd_examples_per_second": p.rate, "dpsgd_examples_per_second": d.rate,
                "dpsgd_slowdown": p.rate / d.rate, "sgd_train_accuracy": p.accuracy, "dpsgd_train_accuracy": d.accuracy,
                "dpsgd_grid_examples_per_second": g.rate, "dpsgd_grid_train_accuracy": g.accuracy, "grid_over_float_noise": d.rate / g.rate,
            ]
            if json { try JSONOutput.print(result); return }
            print("fedgate bench train — logistic regression, \(rows) × \(features) synthetic rows, batch 256, one epoch, one core")
            print(String(format: "  plain SGD   %8.2f M examples/s  (train accuracy %.3f)", p.rate / 1e6, p.accuracy))
            print(String(format: "  DP-SGD      %8.2f M examples/s  (train accuracy %.3f; per-example clipping + CSPRNG noise)", d.rate / 1e6, d.accuracy))
            print(String(format: "  DP-SGD grid %8.2f M examples/s  (train accuracy %.3f; discrete Gaussian noise on the grid, dp.noise: discrete)", g.rate / 1e6, g.accuracy))
            print(String(format: "  DP-SGD costs %.2f× plain SGD (target < 3×); on the grid %.2f× float noise", p.rate / d.rate, d.rate / g.rate))
        }
    }
}
