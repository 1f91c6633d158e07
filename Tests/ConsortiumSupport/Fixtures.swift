import FedGateLearning
import FedGatePrivacy
import FedGateSimulation
import Foundation

/// The data, policy and plan the networked and process tests share: the breast-cancer data, a
/// hospital's policy for it, a plan the policy accepts, and the simulator run the networked rounds
/// are compared with.
enum Fixtures {
    static let data = try! Dataset.load(csv: Consortium.root.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv"), label: "malignant")

    /// What the shared policy lets leave without DP (`releases:`).
    static let allReleases = "releases: { without_dp: [round_accuracy, final_evaluation, label_classes] }"

    static func policy(silo: String, purposes: [String] = ["research"], program: String? = nil, releases: String = allReleases) -> String {
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
        \(releases)
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
        \(statisticsYAML)
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
        s.statistics = try statistics
        return try FederatedSimulation(data: data, settings: s)
    }

    /// The statistics release's noise multiplier in the shared plan.
    static let statisticsNoise = 2.0

    /// Each feature's range as a data scientist would state it: the data's own, widened by a
    /// twentieth on each side (the data set is public; a real plan takes them from a data dictionary).
    static let ranges: [StatisticsRelease.Range] = (0..<data.featureCount).map { j in
        let column = (0..<data.count).map { Double(data.features[$0 * data.featureCount + j]) }
        let (lo, hi) = (column.min()!, column.max()!)
        let pad = (hi - lo) / 20
        return .init(lower: lo - pad, upper: hi + pad)
    }

    static var statistics: StatisticsRelease { get throws { try StatisticsRelease(ranges: ranges, noiseMultiplier: statisticsNoise) } }

    /// The consortium's standardisation of these shards: each silo's statistics release with the
    /// run's fixed noise, combined (what the broker makes from the gateways' answers).
    static func standardisation(_ shards: [(train: Dataset, test: Dataset)], seed: UInt64) throws -> Standardisation {
        let release = try statistics
        return try release.standardisation(combining: shards.enumerated().map { s, shard in
            var noise = RepeatableNoise(run: seed, silo: s, round: 0).noise
            return release.release(shard.train, noise: &noise)
        })
    }

    /// The plan's `statistics:` block for the shared columns.
    static var statisticsYAML: String {
        let bounds = zip(data.featureNames, ranges).map { "\($0): [\($1.lower), \($1.upper)]" }.joined(separator: ", ")
        return "statistics: { noise_multiplier: \(statisticsNoise), bounds: { \(bounds) } }"
    }
}
