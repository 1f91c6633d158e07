import FedGatePolicy
@testable import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// A plan that needs a person's approval at a silo waits for it before its first round: over
/// mutual TLS, with three gateways and real SQLite stores, one of whose policies requires approval.
@Suite("Plans that wait for approval")
struct ApprovalWaitTests {
    typealias Silo = NetworkedRoundTests.Silo

    /// A broker polling approvals every 100 ms and three gateways; hospital-2's policy requires a
    /// person's approval of every plan.
    func withApprovingSilo(_ body: @escaping @Sendable (SQLiteLedger, BrokerHandle, [Silo]) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 4).shards()
        var settings = BrokerCoordinator.Settings()
        settings.approvalPoll = .milliseconds(100)
        settings.connectWait = .seconds(1)
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   settings: settings, logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                let policy = i == 2 ? Fixtures.policy(silo: "hospital-2") + "\napproval: { required: true, expires_after_hours: 24 }\n" : nil
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test,
                                                                      policy: policy, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count == 3 }
            try await body(brokerStore, broker, silos)
        }
    }

    func submit(_ text: String, _ broker: BrokerHandle) async throws -> String {
        try await broker.coordinator.submit(try TrainingPlan.parse(text, file: "plan"), text: text, by: "dana")
    }

    @Test("with a quorum of three and one silo's approval missing, the plan waits (in its status and audit), reserves nothing, and runs once the silo approves")
    func waitsThenRuns() async throws {
        try await withApprovingSilo { brokerStore, broker, silos in
            let hash = try await submit(Fixtures.plan(rounds: 2, quorum: 3), broker)
            let waiting = await eventually { await broker.coordinator.status(hash)?.current?.phase == "awaiting approval" }
            try #require(waiting, "the plan never said it waits for approval")
            let status = try #require(await broker.coordinator.status(hash))
            #expect(status.state == .running && status.rounds.isEmpty)
            #expect(status.current?.accepted == ["hospital-0", "hospital-1"])
            #expect(status.refusals["hospital-2"]?.first?.hasPrefix("approval: ") == true, "\(status.refusals)")
            // The wait is announced in the audit (written just after the status says so: on a loaded
            // machine, later); several polls after that, still waiting, no round opened, no budget
            // reserved anywhere, and announced once.
            let announced = try await eventually { try await brokerStore.auditRecords().contains { $0.action == "plan.await_approval" } }
            try #require(announced, "the wait never reached the audit")
            try await Task.sleep(for: .milliseconds(500))
            #expect(await broker.coordinator.status(hash)?.current?.phase == "awaiting approval")
            #expect(try await brokerStore.rounds(planHash: hash).isEmpty)
            for silo in silos { #expect(try await silo.ledger.backend.entries(dataset: "breast-cancer-2024").isEmpty) }
            let awaited = try await brokerStore.auditRecords().filter { $0.action == "plan.await_approval" }
            #expect(awaited.count == 1, "announced once, not at every poll")
            let record = try #require(awaited.first)
            if case .success(.planAwaitingApproval(let p)) = AuditEvent.of(record) {
                #expect(p.silos == ["hospital-2"] && p.accepted == ["hospital-0", "hospital-1"] && p.until > Date().timeIntervalSince1970)
            } else {
                Issue.record("plan.await_approval does not read back: \(record.payload)")
            }

            // The silo's admin approves the plan in the silo's own store; the next poll sees it.
            let governance = try #require(silos[2].ledger.backend as? any GovernanceBackend)
            try await governance.decideApproval(planHash: hash, silo: "hospital-2", approve: true, actor: "admin@hospital-2", at: Date())
            let final = try #require(await broker.coordinator.finished(hash))
            #expect(final.state == .finished, "\(final.reason ?? "")")
            #expect(final.rounds.map(\.state) == ["committed", "committed"])
            #expect(final.rounds.allSatisfy { $0.participants == ["hospital-0", "hospital-1", "hospital-2"] })
            // Its statistics release (round 0) and the two rounds.
            #expect(try await silos[2].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.state == .committed }.map(\.round).sorted() == [0, 1, 2])

            // The compliance report says who approved it, that the plan waited, what it asked and how it ended.
            let report = ComplianceReport([AuditTrail(source: "broker", records: try await brokerStore.auditRecords()),
                                           AuditTrail(source: "hospital-2", records: try await silos[2].ledger.backend.auditRecords())], filter: AuditFilter())
            #expect(report.approvals.map { "\($0.silo) \($0.plan == hash) \($0.approved) \($0.actor)" } == ["hospital-2 true true admin@hospital-2"])
            #expect(report.awaitedApprovals.map(\.silos) == [["hospital-2"]])
            let plan = try #require(report.plans.first { $0.hash == hash })
            #expect(plan.outcome?.state == "finished" && plan.submission.quorum == 3 && plan.submission.secureAggregation == false)
            #expect(plan.submission.dp?.contains("noise multiplier 2.34") == true && plan.submission.columns?.count == Fixtures.data.featureCount)
            #expect(report.caps.contains { $0.source == "hospital-2" && $0.dataset == "breast-cancer-2024" && $0.lifetime == 20 })
        }
    }

    @Test("when the approval does not come before the plan's approval deadline, the plan fails with the silo named and no round run; approved later, the same plan runs again as its second run")
    func deadlinePasses() async throws {
        try await withApprovingSilo { brokerStore, broker, silos in
            let text = Fixtures.plan(rounds: 2, quorum: 3).replacingOccurrences(of: "round_seconds: 60 }", with: "round_seconds: 60, approval_seconds: 1 }")
            let hash = try await submit(text, broker)
            let final = try #require(await broker.coordinator.finished(hash))
            #expect(final.state == .failed)
            #expect(final.reason?.contains("waited for approval at hospital-2") == true, "\(final.reason ?? "")")
            let rounds = try await brokerStore.rounds(planHash: hash)
            #expect(final.rounds.isEmpty && rounds.isEmpty)
            let run = try #require(try await brokerStore.planRuns().first { $0.planHash == hash })
            #expect(run.state == .failed && run.reason?.contains("hospital-2") == true)
            for silo in silos { #expect(try await silo.ledger.backend.entries(dataset: "breast-cancer-2024").isEmpty) }

            // Approved later, the same plan submitted again is its second run, and runs.
            let governance = try #require(silos[2].ledger.backend as? any GovernanceBackend)
            try await governance.decideApproval(planHash: hash, silo: "hospital-2", approve: true, actor: "admin@hospital-2", at: Date())
            #expect(try await submit(text, broker) == hash)
            let second = try #require(await broker.coordinator.finished(hash))
            #expect(second.state == .finished && second.rounds.map(\.state) == ["committed", "committed"], "\(second.reason ?? "")")
            #expect(try await brokerStore.planRuns().first { $0.planHash == hash }.map { ($0.run, $0.state) } ?? (0, .failed) == (2, .finished))
            #expect(try await brokerStore.rounds(planHash: hash).map(\.number) == [1, 2])
        }
    }

    @Test("a plan every round of which aborted has no model: it ends failed, with the last round's reason, not finished")
    func everyRoundAborted() async throws {
        try await withApprovingSilo { brokerStore, broker, _ in
            // Quorum four among three silos: no approval can make it, so the rounds run and abort.
            let hash = try await submit(Fixtures.plan(rounds: 2, quorum: 4), broker)
            let final = try #require(await broker.coordinator.finished(hash))
            #expect(final.rounds.map(\.state) == ["aborted", "aborted"])
            #expect(final.state == .failed)
            #expect(final.reason?.contains("every round aborted") == true && final.reason?.contains("quorum is 4") == true, "\(final.reason ?? "")")
            #expect(try await brokerStore.planRuns().first { $0.planHash == hash }?.state == .failed)
            let report = ComplianceReport([AuditTrail(source: "broker", records: try await brokerStore.auditRecords())], filter: AuditFilter())
            #expect(report.rounds.filter { $0.plan == hash }.allSatisfy { $0.state == "aborted" && $0.reason?.contains("quorum is 4") == true },
                    "each aborted round says why: \(report.rounds.map { $0.reason ?? "-" })")
            #expect(report.plans.first { $0.hash == hash }?.outcome?.state == "failed")
        }
    }
}
