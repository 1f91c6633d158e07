import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
@_spi(Testing) import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import Testing
@testable import FedGateConsortiumTesting

/// `kind: evaluate`: a registry version scored at every silo over mutual TLS, training nothing.
@Suite("Evaluation plans on a registry version")
struct EvaluationPlanTests {
    static func evaluationPlan(version: Int, minAccuracy: Double = 0.8) -> String {
        """
        kind: evaluate
        model_version: \(version)
        purpose: research
        datasets: [breast-cancer-2024]
        columns: [\(Fixtures.data.featureNames.joined(separator: ", "))]
        model: logistic
        quorum: 3
        broker: { region: eu-west, jurisdiction: EU }
        deadlines: { round_seconds: 60 }
        evaluation: { min_accuracy: \(minAccuracy) }
        """
    }

    @Test("an evaluation plan on the version a training plan made reproduces that plan's final evaluation at every silo, spends nothing where the policy releases it exactly, and makes no new version; a version that does not exist is refused at submission")
    func reproducesTheTrainingPlansFigures() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 4).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test,
                                                                      broker: brokerStore, port: broker.port, fixedNoise: (4, i)))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 3 }

            let trainingHash = try await NetworkedRoundTests.submit(Fixtures.plan(rounds: 3, quorum: 3), consortium, port: broker.port)
            let trained = try #require(await broker.coordinator.finished(trainingHash))
            #expect(trained.state == .finished && trained.modelVersion == 1, "\(trained.reason ?? "")")
            let before = try await silos.asyncMap { try await $0.ledger.backend.entries(dataset: "breast-cancer-2024").count }

            // A version the registry does not hold is refused when submitted, naming the field.
            await #expect { _ = try await NetworkedRoundTests.submit(Self.evaluationPlan(version: 7), consortium, port: broker.port) } throws: {
                "\($0)".contains("model_version") && "\($0)".contains("no version 7")
            }

            let hash = try await NetworkedRoundTests.submit(Self.evaluationPlan(version: 1), consortium, port: broker.port)
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished && status.rounds.isEmpty, "\(status.reason ?? "") \(status.rounds.map(\.state))")
            let evaluation = try #require(status.evaluation), original = try #require(trained.evaluation)
            // The same file on the same held-out rows with the same standardisation: the same figures.
            #expect(evaluation.silos.map(\.silo) == original.silos.map(\.silo))
            for (now, then) in zip(evaluation.silos, original.silos) {
                #expect(now.accuracy == then.accuracy && now.examples == then.examples, "\(now.silo): \(now.accuracy) vs \(then.accuracy)")
            }
            #expect(evaluation.pooledAccuracy == original.pooledAccuracy && status.gate?.passed == true && status.modelVersion == 1)
            // Nothing trained, nothing new in the registry, nothing spent: each policy releases the evaluation exactly.
            #expect(try await brokerStore.modelVersions().count == 1)
            let after = try await silos.asyncMap { try await $0.ledger.backend.entries(dataset: "breast-cancer-2024").count }
            #expect(after == before, "ledger entries \(before) → \(after)")
            // The gate's record names round 0 and the silos' figures; the submission says what the plan is.
            let records = try await brokerStore.auditRecords()
            let gate = try #require(records.last { $0.action == "model.gate" && $0.subject == hash })
            guard case .modelGated(let g)? = try? AuditEvent(action: gate.action, payload: gate.payload) else { Issue.record("unreadable gate"); return }
            #expect(g.round == 0 && g.passed && Set(g.silos.keys) == ["hospital-0", "hospital-1", "hospital-2"])
            #expect(records.contains { $0.action == "plan.submit" && $0.subject == hash && $0.payload.contains("evaluate version 1") })
        }
    }
}

extension Array where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
