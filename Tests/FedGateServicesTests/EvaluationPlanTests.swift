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
        try await Self.withHospitals(seed: 4) { consortium, brokerStore, broker, silos in

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

extension EvaluationPlanTests {
    /// Three hospitals' gateways on the breast-cancer shards of the simulator's `seed`, connected
    /// to a broker on its own store, with the run's repeatable noise.
    static func withHospitals(seed: UInt64, _ body: @escaping @Sendable (Consortium, SQLiteLedger, BrokerHandle, [NetworkedRoundTests.Silo]) async throws -> Void)
        async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: seed).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test,
                                                                      broker: brokerStore, port: broker.port, fixedNoise: (seed, i)))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 3 }
            try await body(consortium, brokerStore, broker, silos)
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

/// `kind: statistics`: federated analytics over mutual TLS, each silo's release with DP in its ledger.
@Suite("Statistics plans: federated analytics with DP")
struct StatisticsPlanTests {
    /// The example statistics plan (noise multiplier 4, mean_radius and mean_area, a radius histogram).
    static let plan = try! String(contentsOf: Consortium.root.appendingPathComponent("examples/plans/breast-cancer-statistics.yaml"), encoding: .utf8)

    @Test("a statistics plan's means and histogram are within the DP noise of the pooled rows' own, each silo's ledger holds the release's event, and the broker audits what it pooled")
    func pooledWithinTheNoise() async throws {
        let shards = try Fixtures.simulation(seed: 5).shards()
        try await EvaluationPlanTests.withHospitals(seed: 5) { consortium, brokerStore, broker, silos in

            let hash = try await NetworkedRoundTests.submit(Self.plan, consortium, port: broker.port)
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished && status.rounds.isEmpty, "\(status.reason ?? "")")
            let (pooledSilos, _, result) = try #require(status.analytics)
            #expect(pooledSilos == ["hospital-0", "hospital-1", "hospital-2"])

            // The true figures, from every row of the three silos (training and held-out).
            let names = Fixtures.data.featureNames
            let (radius, area) = (try #require(names.firstIndex(of: "mean_radius")), try #require(names.firstIndex(of: "mean_area")))
            let rows = shards.flatMap { [$0.train, $0.test] }.flatMap { d in (0..<d.count).map { Array(d.row($0)) } }
            let n = Double(rows.count)
            func mean(_ j: Int) -> Double { rows.reduce(0) { $0 + Double($1[j]) } / n }
            // One silo's noise on a sum of values scaled into [−½, ½] has σ = z·√(1 + 5·2/16 + 1); three silos' add up.
            let sigma = 4.0 * (1 + 10.0 / 16 + 1).squareRoot(), pooledSigma = sigma * 3.0.squareRoot()
            for (k, (j, width)) in [(radius, 29 - 6.9), (area, 2600.0 - 140)].enumerated() {
                let tolerance = 4 * pooledSigma / n * width + 1e-9
                #expect(abs(result.columns[k].mean - mean(j)) < tolerance, "column \(k): \(result.columns[k].mean) vs \(mean(j)) ± \(tolerance)")
            }
            #expect(abs(result.count - n) < 4 * pooledSigma, "\(result.count) vs \(n)")
            let edges: [Double] = [6, 10, 14, 18, 22, 30]
            let exact = (0..<5).map { b in Double(rows.filter { Double($0[radius]) >= edges[b] && (b == 4 || Double($0[radius]) < edges[b + 1]) }.count) }
            let histogram = try #require(result.histograms.first)
            for (b, (got, want)) in zip(histogram.counts, exact).enumerated() {
                if let got { #expect(abs(got - want) < 4 * pooledSigma, "bin \(b): \(got) vs \(want)") } else { #expect(want < 10 + 4 * pooledSigma, "bin \(b) withheld with \(want) rows") }
            }
            print(String(format: "statistics plan: count %.1f (true %.0f); mean_radius %.3f (true %.3f); mean_area %.1f (true %.1f); bins %@ (true %@)",
                         result.count, n, result.columns[0].mean, mean(radius), result.columns[1].mean, mean(area),
                         "\(histogram.counts.map { $0.map { String(format: "%.1f", $0) } ?? "withheld" })", "\(exact)"))
            let median = try #require(histogram.quartiles?[1])
            let sorted = rows.map { Double($0[radius]) }.sorted()
            #expect(abs(median - sorted[rows.count / 2]) < 1.0, "median \(median) vs \(sorted[rows.count / 2])")

            // Each silo's ledger committed the release's event on the data set, once; nothing else.
            for silo in silos {
                let entries = try await silo.ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.planHash == hash }
                #expect(entries.map(\.event) == [.gaussian(noiseMultiplier: 4)] && entries.allSatisfy { $0.state == .committed }, "\(entries)")
            }
            let pooled = try #require(try await brokerStore.auditRecords().last { $0.action == "statistics.pooled" && $0.subject == hash })
            guard case .statisticsPooled(let p)? = try? AuditEvent(action: pooled.action, payload: pooled.payload) else { Issue.record("unreadable"); return }
            #expect(p.silos == pooledSilos && Set(p.means.keys) == ["mean_radius", "mean_area"])
        }
    }
}
