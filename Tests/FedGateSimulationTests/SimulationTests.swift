import Foundation
import Testing
import FedGateAggregation
import FedGateLearning
import FedGatePrivacy
import FedGateTestSupport
@testable import FedGateSimulation

/// The example data sets shipped in examples/data.
enum ExampleData {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples/data")
    static var breastCancer: Dataset { try! Dataset.load(csv: folder.appendingPathComponent("breast_cancer_wisconsin.csv"), label: "malignant") }
    static var digits: Dataset { try! Dataset.load(csv: folder.appendingPathComponent("digits_8x8.csv"), label: "digit") }
}

@Suite("Federated simulation on the real data sets")
struct SimulationTests {
    func breastCancer(seed: UInt64, dp: DPSGDSettings? = nil, statistics: StatisticsRelease? = nil) throws -> FederatedSimulation.Result {
        var s = FederatedSimulation.Settings()
        s.silos = 3; s.partitioning = .dirichlet(alpha: 0.5); s.model = .logistic; s.rounds = 20; s.seed = seed
        if let dp { s.local.dp = dp; s.local.learningRate = 0.5 }
        s.statistics = statistics
        // Repeatable noise whenever there is noise: a comparison of two runs is then paired (the same
        // DP-SGD noise with and without the release), and a threshold cannot fail by the draw (the
        // release-cost test once did, at 2.3 points, with fresh noise on one side).
        s.fixedNoiseSeed = dp == nil && statistics == nil ? nil : seed
        return try FederatedSimulation(data: ExampleData.breastCancer, settings: s).run()
    }

    @Test("breast cancer, 3 silos, Dirichlet 0.5, logistic, 20 rounds of FedAvg: accuracy ≥ 0.95 (mean of 5 seeds)")
    func breastCancerFedAvg() throws {
        let accuracies = try (0..<5).map { try breastCancer(seed: UInt64($0)).final.accuracy }
        #expect(accuracies.reduce(0, +) / 5 >= 0.95, "\(accuracies)")
        #expect(accuracies.allSatisfy { $0 >= 0.93 }, "\(accuracies)")
    }

    /// The example plan's ranges for the 30 breast-cancer columns (examples/plans/demo.yaml).
    static let demoRanges: [StatisticsRelease.Range] = [
        (6.9, 29), (9.7, 40), (43, 190), (140, 2600), (0.052, 0.17), (0.019, 0.35), (0, 0.43), (0, 0.21), (0.1, 0.31), (0.049, 0.098),
        (0.11, 2.9), (0.36, 4.9), (0.75, 22), (6.8, 550), (0.0017, 0.032), (0.0022, 0.14), (0, 0.4), (0, 0.053), (0.0078, 0.079), (0.00089, 0.03),
        (7.9, 37), (12, 50), (50, 260), (180, 4300), (0.071, 0.23), (0.027, 1.1), (0, 1.3), (0, 0.3), (0.15, 0.67), (0.055, 0.21),
    ].map { StatisticsRelease.Range(lower: $0.0, upper: $0.1) }

    @Test("with DP-SGD, standardising from the silos' statistics releases (multiplier 2, the demo plan's ranges) costs under two points of accuracy against the exact statistics (mean of 5 seeds)")
    func statisticsReleaseCost() throws {
        let dp = try DPSGDSettings(noiseMultiplier: 2.34, clipNorm: 1, samplingRate: 0.1)
        let release = try StatisticsRelease(ranges: Self.demoRanges, noiseMultiplier: 2)
        var exact: [Double] = [], released: [Double] = []
        for seed in UInt64(0)..<5 {
            exact.append(try breastCancer(seed: seed, dp: dp).final.accuracy)
            let run = try breastCancer(seed: seed, dp: dp, statistics: release)
            released.append(run.final.accuracy)
            #expect(run.eventsPerSilo.allSatisfy { $0 == .composed([.gaussian(noiseMultiplier: 2), .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200)]) },
                    "the release is accounted with the steps: \(run.eventsPerSilo)")
        }
        let (a, b) = (exact.reduce(0, +) / 5, released.reduce(0, +) / 5)
        print("statistics release cost: exact \(exact) mean \(a); released \(released) mean \(b)")
        #expect(a - b < 0.02, "exact \(exact), released \(released)")
    }

    @Test("the same with DP-SGD at ε ≤ 3 per silo: accuracy ≥ 0.90, and the ε reported is `fedgate privacy epsilon`'s")
    func breastCancerDP() throws {
        let dp = try DPSGDSettings(noiseMultiplier: 2.34, clipNorm: 1, samplingRate: 0.1)
        let result = try breastCancer(seed: 1, dp: dp)
        #expect(result.final.accuracy >= 0.90)
        let reference = try epsilon(of: .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200), delta: 1e-5)
        for eps in result.epsilonPerSilo {
            #expect(eps <= 3)
            #expect(abs(eps - reference) < 1e-12)
        }
        #expect(result.eventsPerSilo.allSatisfy { $0 == .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200) })
        #expect(result.history.last!.epsilonPerSilo == result.epsilonPerSilo)
    }

    @Test("digits, 5 silos, Dirichlet 0.3, softmax: FedAvg, FedProx and SCAFFOLD all learn")
    func digitsStrategies() async throws {
        try await onCPULane {
            var s = FederatedSimulation.Settings()
            s.silos = 5; s.partitioning = .dirichlet(alpha: 0.3); s.model = .softmax; s.rounds = 10
            s.local.epochs = 2; s.local.learningRate = 0.05
            let data = ExampleData.digits
            let fedavg = try FederatedSimulation(data: data, settings: s).run().final.accuracy
            var prox = s; prox.local.proxMu = 0.1
            let fedprox = try FederatedSimulation(data: data, settings: prox).run().final.accuracy
            var sc = s; sc.scaffold = true
            let scaffold = try FederatedSimulation(data: data, settings: sc).run().final.accuracy
            #expect(fedavg > 0.85 && fedprox > 0.85 && scaffold > 0.85, "\(fedavg) \(fedprox) \(scaffold)")
        }
    }

    @Test("the trained model exports as named tensors")
    func export() throws {
        let net = try Network(kind: .mlp(hidden: [8]), inputs: 4, classes: 3, seed: 1)
        let set = net.tensorSet
        #expect(set.tensors.map(\.name) == ["layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"])
        #expect(set.tensors[0].shape == [8, 4])
        #expect(set.elementCount == net.parameters.count)
    }
}

@Suite("Byzantine silos and robust strategies")
struct RobustnessTests {
    func digits(strategy: String, attack: String?) throws -> FederatedSimulation.Result {
        var s = FederatedSimulation.Settings()
        s.silos = 10; s.partitioning = .dirichlet(alpha: 1.0); s.model = .softmax; s.rounds = 20
        if let attack {
            let (k, a) = try ByzantineAttack.parse(attack)
            s.byzantineCount = k; s.attack = a
        }
        s.strategy = try makeStrategy(strategy, byzantine: s.byzantineCount)
        return try FederatedSimulation(data: ExampleData.digits, settings: s).run()
    }

    @Test("two sign-flip ×10 attackers wreck FedAvg; median, trimmed mean, Multi-Krum and Bulyan stay within 5 points of clean FedAvg")
    func signFlip() async throws {
        try await onCPULane {
            let clean = try digits(strategy: "fedavg", attack: nil).final.accuracy
            let broken = try digits(strategy: "fedavg", attack: "2:sign-flip").final.accuracy
            #expect(broken < clean - 0.20, "FedAvg under attack \(broken) vs clean \(clean)")
            for strategy in ["median", "trimmed-mean", "multi-krum", "bulyan"] {
                let r = try digits(strategy: strategy, attack: "2:sign-flip")
                #expect(r.final.accuracy >= clean - 0.05, "\(strategy): \(r.final.accuracy) vs clean FedAvg \(clean)")
                if strategy == "multi-krum" || strategy == "bulyan" {
                    #expect(r.detectionRate == 1, "\(strategy) excluded the attackers in \(r.detectionRate ?? 0) of their rounds")
                    #expect(r.history.allSatisfy { $0.excluded.contains("silo-0") && $0.excluded.contains("silo-1") })
                }
            }
        }
    }

    @Test("updates with NaN or above the norm bound are refused and reported, and the round goes on")
    func validation() throws {
        var s = FederatedSimulation.Settings()
        s.silos = 4; s.rounds = 3; s.model = .logistic
        s.byzantineCount = 1; s.attack = .scale(1e6); s.maximumUpdateNorm = 100
        let r = try FederatedSimulation(data: ExampleData.breastCancer, settings: s).run()
        #expect(r.history.allSatisfy { $0.rejected.map(\.silo) == ["silo-0"] && $0.rejected[0].check == .norm })
        #expect(r.final.accuracy > 0.85)
    }

    @Test("compressed updates reach within one point of uncompressed accuracy", arguments: ["fp16", "q8", "topk:0.3"])
    func compression(_ codec: String) throws {
        var s = FederatedSimulation.Settings()
        s.silos = 3; s.partitioning = .dirichlet(alpha: 0.5); s.model = .logistic; s.rounds = 20; s.seed = 1
        let plain = try FederatedSimulation(data: ExampleData.breastCancer, settings: s).run()
        s.compression = codec
        let compressed = try FederatedSimulation(data: ExampleData.breastCancer, settings: s).run()
        #expect(compressed.final.accuracy >= plain.final.accuracy - 0.01)
        #expect(compressed.history[0].bytesPerSilo < compressed.uncompressedBytesPerSilo)
    }
}
