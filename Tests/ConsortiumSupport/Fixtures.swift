import FedGateLearning
import FedGatePrivacy
import FedGateSimulation
import Foundation

/// The data, policy and plan the networked and process tests share: the breast-cancer data, a
/// hospital's policy for it, a plan the policy accepts, and the simulator run the networked rounds
/// are compared with.
enum Fixtures {
    static let data = try! Dataset.load(csv: Consortium.root.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv"), label: "malignant")

    static func policy(silo: String, purposes: [String] = ["research"], program: String? = nil) -> String {
        """
        silo: \(silo)
        datasets:
          breast-cancer-2024:
            purposes: [\(purposes.joined(separator: ", "))]
            columns: [\(data.featureNames.joined(separator: ", "))]
            epsilon:
              per_plan: 5.0
              lifetime: 20.0
            delta_max: 1.0e-5
        residency:
          allowed_regions: [eu-west]
          allowed_jurisdictions: [EU]
        privacy:
          min_noise_multiplier: 1.0
          max_clip_norm: 1.0
          require_secure_aggregation: false
          min_silos_per_round: 2
        models: [logistic]
        executors: [builtin\(program == nil ? "" : ", numpy")]
        \(program.map { "programs: { numpy: { command: [python3, \($0)], time_limit_seconds: 60, memory_limit_mb: 2048 } }" } ?? "")
        """
    }

    static func plan(rounds: Int, quorum: Int, deadline: Int = 60, purpose: String = "research", evaluation: String? = nil,
                     secure: Bool = false, executor: String = "builtin") -> String {
        """
        \(evaluation.map { "evaluation: \($0)" } ?? "")
        purpose: \(purpose)
        datasets: [breast-cancer-2024]
        columns: [\(data.featureNames.joined(separator: ", "))]
        model: logistic
        executor: \(executor)
        rounds: \(rounds)
        local_steps: 10
        strategy: fedavg
        dp: { noise_multiplier: 2.34, clip_norm: 1.0, sampling_rate: 0.1, delta: 1.0e-5 }
        secure_aggregation: \(secure)
        quorum: \(quorum)
        broker: { region: eu-west, jurisdiction: EU }
        deadlines: { round_seconds: \(deadline) }
        """
    }

    /// The simulator's settings that the networked runs mirror.
    static func simulation(seed: UInt64) throws -> FederatedSimulation {
        var s = FederatedSimulation.Settings()
        s.silos = 3
        s.partitioning = .dirichlet(alpha: 0.5)
        s.model = .logistic
        s.rounds = 10
        s.seed = seed
        s.local.learningRate = 0.5
        s.local.dp = try DPSGDSettings(noiseMultiplier: 2.34, clipNorm: 1, samplingRate: 0.1)
        s.fixedNoiseSeed = seed
        return try FederatedSimulation(data: data, settings: s)
    }
}
