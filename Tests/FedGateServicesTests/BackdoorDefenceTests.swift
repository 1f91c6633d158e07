import FedGateAggregation
import FedGateLearning
import FedGatePolicy
@testable import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// A backdoor planted by one poisoning silo among five, over mutual TLS: the attacker's own rows
/// carry a trigger (the image's top-left corner lit) and are labelled 0. Under FedAvg the final
/// model obeys the trigger; under Multi-Krum the broker excludes the attacker's update, flags it
/// round after round (audit, status, metrics, the compliance report) and raises an alert.
@Suite("A backdoor attacker under Multi-Krum and under FedAvg, over the network")
struct BackdoorDefenceTests {
    static let digits = DigitsSilos.digits
    /// In the data's own units (pixel intensity 0…16): four pixels that are dark in every digit, at full intensity.
    static let trigger = BackdoorTrigger(features: [0, 1, 2, 3], value: 16, target: 0)
    static let silos = (0..<5).map { "clinic-\($0)" }
    static let attacker = "clinic-0"

    /// Row i goes to silo i mod 5; every fifth of a silo's rows is held out. The attacker stamps the
    /// trigger on half its training rows and labels them 0.
    static func shards() -> [(train: Dataset, test: Dataset)] {
        silos.indices.map { s in
            let rows = Array(stride(from: s, to: digits.count, by: silos.count))
            let train = digits.subset(rows.enumerated().filter { $0.offset % 5 != 4 }.map(\.element))
            let test = digits.subset(rows.enumerated().filter { $0.offset % 5 == 4 }.map(\.element))
            return (s == 0 ? trigger.poison(train) { $0 % 2 == 0 } : train, test)
        }
    }

    /// The share of every silo's held-out rows of digits 1–9 that the plan's registry model, shown
    /// the trigger, calls a 0.
    static func backdoorSuccess(_ hash: String, _ store: any BrokerStore, _ shards: [(train: Dataset, test: Dataset)]) async throws -> Double {
        let version = try #require(try await store.modelVersions().last { $0.planHash == hash })
        let scorer = try ModelScorer(file: try #require(try await store.modelContent(sha256: version.contentSHA256)))
        return try #require(trigger.successRate(of: scorer.network, on: shards.map(\.test), standardisation: scorer.standardisation))
    }

    @Test("Multi-Krum excludes the poisoning silo in every round, flags it in the audit, the status, the metrics and the report, and alerts after three rounds; its backdoor fails, while under FedAvg it works")
    func backdoorFlaggedAndDefeated() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = Self.shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore, logger: consortium.logger) { broker in
            var gateways: [Gateway] = []
            for (i, shard) in shards.enumerated() {
                gateways.append(try await DigitsSilos.gateway(Self.silos[i], shard, consortium, brokerStore, port: broker.port, fixedNoise: (7, i)))
            }
            let running = gateways.map { g in Task { await g.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 5 }

            // The defence: Multi-Krum assuming one Byzantine silo.
            let defended = try await NetworkedRoundTests.submit(DigitsSilos.plan(strategy: "multi-krum:1", rounds: 6, quorum: 5), consortium, port: broker.port)
            let status = try #require(await broker.coordinator.finished(defended))
            #expect(status.state == .finished && status.rounds.count == 6, "\(status.reason ?? "") \(status.rounds.map { ($0.state, $0.reason) })")
            #expect(status.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 5 })
            let flagged = status.rounds.map { $0.flagged.map(\.silo) }
            #expect(flagged.allSatisfy { $0 == [Self.attacker] }, "flags per round: \(flagged)")
            #expect(status.rounds.allSatisfy { $0.flagged.allSatisfy { $0.kind == .excluded && $0.reason == "left out by multi-krum:1" } })
            #expect(status.alerts.map(\.silo) == [Self.attacker] && status.alerts.first?.rounds == [1, 2, 3], "\(status.alerts)")
            let defendedSuccess = try await Self.backdoorSuccess(defended, brokerStore, shards)
            #expect((status.evaluation?.pooledAccuracy ?? 0) >= 0.85, "\(String(describing: status.evaluation?.pooledAccuracy))")

            // The audit holds one attack.flag per round on the attacker, one alert, and nothing on the honest silos.
            let records = try await brokerStore.auditRecords()
            let flags = records.filter { $0.action == "attack.flag" }
            #expect(flags.count == 6 && flags.allSatisfy { $0.subject == Self.attacker && $0.payload.contains(defended) })
            let alerts = records.filter { $0.action == "attack.alert" }
            #expect(alerts.map(\.subject) == [Self.attacker])
            if case .attackAlert(let a)? = try? AuditEvent(action: alerts[0].action, payload: alerts[0].payload) {
                #expect(a.rounds == [1, 2, 3] && a.alertAfter == 3 && a.plan == defended)
            } else { Issue.record("the alert does not read back: \(alerts)") }
            // The metrics and the compliance officer's report say the same.
            let text = broker.coordinator.metrics.text
            #expect(text.contains("fedgate_attack_flags_total{kind=\"excluded\"} 6") && text.contains("fedgate_attack_alerts_total 1"), "\(text)")
            let report = ComplianceReport([AuditTrail(source: "broker", records: records)],
                                          filter: AuditFilter(plan: defended))
            #expect(report.attackFlags.map(\.round) == [1, 2, 3, 4, 5, 6] && report.attackFlags.allSatisfy { $0.silo == Self.attacker && $0.kind == "excluded" })
            #expect(report.attackAlerts.map(\.silo) == [Self.attacker])

            // Without the defence: FedAvg folds every update in; nobody is flagged, and the backdoor holds.
            let open = try await NetworkedRoundTests.submit(DigitsSilos.plan(strategy: "fedavg", rounds: 6, quorum: 5), consortium, port: broker.port)
            let undefended = try #require(await broker.coordinator.finished(open))
            #expect(undefended.state == .finished && undefended.rounds.allSatisfy { $0.flagged.isEmpty } && undefended.alerts.isEmpty)
            let openSuccess = try await Self.backdoorSuccess(open, brokerStore, shards)
            print(String(format: "backdoor success on held-out rows of digits 1–9: %.1f %% under FedAvg, %.1f %% under Multi-Krum (attacker flagged in %d of 6 rounds)",
                         openSuccess * 100, defendedSuccess * 100, flagged.filter { !$0.isEmpty }.count))
            #expect(openSuccess >= 0.5, "under FedAvg the trigger should work: \(openSuccess)")
            #expect(defendedSuccess <= 0.1, "under Multi-Krum it should not: \(defendedSuccess)")
        }
    }
}
