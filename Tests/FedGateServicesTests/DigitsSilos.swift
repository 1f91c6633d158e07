import FedGateLearning
import FedGatePolicy
@testable import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// Silos holding shards of the digits data (8×8 images, 64 pixel columns 0…16, ten classes), each
/// with its own ledger, consent and policy, and the plans the networked digits tests submit.
enum DigitsSilos {
    static let digits = try! Dataset.load(csv: Consortium.root.appendingPathComponent("examples/data/digits_8x8.csv"), label: "digit")
    static let columns = digits.featureNames.joined(separator: ", ")

    static func policy(_ silo: String, extra: String = "") -> String {
        """
        silo: \(silo)
        datasets:
          digits:
            purposes: [research]
            columns: [\(columns)]
            epsilon: { per_plan: 20.0, lifetime: 100.0 }
            delta_max: 1.0e-5
        residency: { allowed_regions: [eu-west], allowed_jurisdictions: [EU] }
        privacy: { min_noise_multiplier: 0.5, max_clip_norm: 1.0, require_secure_aggregation: false, min_silos_per_round: 3 }
        releases: { without_dp: [round_accuracy, final_evaluation, label_classes] }
        models: [softmax]
        executors: [builtin]
        \(extra)
        """
    }

    /// The statistics release's noise multiplier and ranges every digits plan states.
    static let statisticsNoise = 2.0
    static var statisticsYAML: String {
        "statistics: { noise_multiplier: \(statisticsNoise), bounds: { \(digits.featureNames.map { "\($0): [0, 16]" }.joined(separator: ", ")) } }"
    }

    static func plan(strategy: String = "fedavg", rounds: Int, quorum: Int, extra: String = "") -> String {
        """
        purpose: research
        datasets: [digits]
        columns: [\(columns)]
        model: softmax
        rounds: \(rounds)
        local_steps: 10
        strategy: \(strategy)
        dp: { noise_multiplier: 1.0, clip_norm: 1.0, sampling_rate: 0.1, delta: 1.0e-5 }
        \(statisticsYAML)
        secure_aggregation: false
        quorum: \(quorum)
        broker: { region: eu-west, jurisdiction: EU }
        deadlines: { round_seconds: 120 }
        \(extra)
        """
    }

    /// Silo `id`'s gateway on its own ledger over its shard, with the run's repeatable noise.
    static func gateway(_ id: String, _ shard: (train: Dataset, test: Dataset), _ consortium: Consortium, _ brokerStore: any RegistryBackend,
                        port: Int, fixedNoise: (run: UInt64, silo: Int)?, policyExtra: String = "") async throws -> Gateway {
        let store = try await consortium.store(id)
        try await store.save(DatasetBudget(name: "digits", delta: 1e-5, perPlanCap: 20, lifetimeCap: 100), actor: "admin")
        try await store.addConsent(ConsentRecord(dataset: "digits", purpose: "research", legalBasis: "consent", scope: "all scans",
                                                 validFrom: Date().addingTimeInterval(-86_400)), actor: "admin")
        let text = policy(id, extra: policyExtra)
        let governor = SiloGovernor(policy: try SiloPolicy.parse(text, file: "\(id).yaml"), policyText: text, ledger: PrivacyLedger(backend: store))
        var settings = Gateway.Settings(credentials: try await consortium.enrolledSilo(id, in: brokerStore), dataset: "digits",
                                        train: shard.train, test: shard.test)
        settings.brokerPort = port
        settings.learningRate = 0.5
        settings.fixedNoise = fixedNoise
        return Gateway(settings: settings, governor: governor, logger: consortium.logger)
    }
}
