import Crypto
import Foundation
import Testing
@_spi(Testing) @testable import FedGateStore

/// What a broker keeps to resume a plan, and the leader lease, on both backends.
@Suite("Plan runs, checkpoints and the broker lease on SQLite and PostgreSQL")
struct PlanRunTests {
    func store(_ backend: Backend) async throws -> (any BrokerStore)? {
        try await backend.ledger()?.backend as? any BrokerStore
    }

    func file(_ byte: UInt8) -> ([UInt8], String) {
        let bytes = [UInt8](repeating: byte, count: 64)
        return (bytes, SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
    }

    func round(_ s: any BrokerStore, _ plan: String, _ n: Int) async throws {
        try await s.openRound(RoundRecord(planHash: plan, number: n, state: .planned, sampled: ["a"], survivors: [], deadline: Date(), updatedAt: Date()),
                              actor: "broker")
        for state in [RoundRecord.State.offered, .training, .aggregating, .evaluating] {
            try await s.advanceRound(planHash: plan, number: n, to: state, survivors: ["a"], at: Date(), actor: "broker")
        }
    }

    @Test("a plan runs once at a time; each committed round replaces its checkpoint and the replaced file is deleted; a finished plan may run again", arguments: Backend.allCases)
    func checkpoints(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let plan = unique("plan"), now = Date()
        let run = PlanRun(planHash: plan, planYAML: "rounds: 2", submitter: "dana", state: .running, submittedAt: now, updatedAt: now)
        try await s.startPlanRun(run, submission: .init(purpose: "research", rounds: 3, strategy: "fedavg"), actor: "dana")
        await #expect(throws: LedgerError.self) { try await s.startPlanRun(run, submission: .init(purpose: "research", rounds: 3, strategy: "fedavg"), actor: "dana") }

        let (one, sha1) = file(1), (two, sha2) = file(2)
        try await round(s, plan, 1)
        try await s.commitRound(planHash: plan, number: 1, survivors: ["a"], checkpoint: .init(round: 1, contentSHA256: sha1, standardisation: "{}"),
                                content: one, fence: nil, at: Date(), actor: "broker")
        try await round(s, plan, 2)
        // A file that does not hash to the checkpoint's hash is refused, and nothing moves.
        await #expect(throws: LedgerError.self) {
            try await s.commitRound(planHash: plan, number: 2, survivors: ["a"], checkpoint: .init(round: 2, contentSHA256: sha1, standardisation: "{}"),
                                    content: two, fence: nil, at: Date(), actor: "broker")
        }
        #expect(try await s.rounds(planHash: plan).last?.state == .evaluating)
        try await s.commitRound(planHash: plan, number: 2, survivors: ["a"], checkpoint: .init(round: 2, contentSHA256: sha2, standardisation: "{}"),
                                content: two, fence: nil, at: Date(), actor: "broker")
        let stored = try #require(try await s.planRuns().first { $0.planHash == plan })
        #expect(stored.checkpoint == .init(round: 2, contentSHA256: sha2, standardisation: "{}") && stored.state == .running)
        #expect(try await s.modelContent(sha256: sha1) == nil, "the replaced checkpoint's file is gone")
        #expect(try await s.modelContent(sha256: sha2) == two)

        try await s.finishPlanRun(planHash: plan, state: .finished, reason: nil, fence: nil, at: Date(), actor: "broker")
        await #expect(throws: LedgerError.self) { try await s.finishPlanRun(planHash: plan, state: .failed, reason: "x", fence: nil, at: Date(), actor: "broker") }
        try await s.startPlanRun(run, submission: .init(purpose: "research", rounds: 3, strategy: "fedavg"), actor: "dana")
        #expect(try await s.planRuns().first { $0.planHash == plan }?.checkpoint == nil)
        let records = try await s.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        #expect(records.filter { $0.action == "plan.submit" }.count == 2 && records.contains { $0.action == "plan.finished" })
    }

    @Test("a plan submitted again after its run ended is its next run: its rounds start again from 1, apart from the earlier run's, which stay as they ended", arguments: Backend.allCases)
    func reruns(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let plan = unique("plan"), now = Date()
        let run = PlanRun(planHash: plan, planYAML: "rounds: 2", submitter: "dana", state: .running, submittedAt: now, updatedAt: now)
        let submission = AuditEvent.PlanSubmission(purpose: "research", rounds: 2, strategy: "fedavg")
        try await s.startPlanRun(run, submission: submission, actor: "dana")
        try await round(s, plan, 1)
        try await s.advanceRound(planHash: plan, number: 1, to: .aborted, survivors: [], at: Date(), actor: "broker")
        // A round of the same run cannot be opened twice: the store says which, not a key violation.
        let again = RoundRecord(planHash: plan, number: 1, state: .planned, sampled: ["a"], survivors: [], deadline: Date(), updatedAt: Date())
        await #expect { try await s.openRound(again, actor: "broker") } throws: { "\($0)".contains("round 1 of plan") && "\($0)".contains("already recorded") }
        try await s.finishPlanRun(planHash: plan, state: .failed, reason: "every round aborted", fence: nil, at: Date(), actor: "broker")
        #expect(try await s.planRuns().first { $0.planHash == plan }?.run == 1)

        try await s.startPlanRun(run, submission: submission, actor: "dana")
        #expect(try await s.planRuns().first { $0.planHash == plan }.map { ($0.run, $0.state) } ?? (0, .failed) == (2, .running))
        #expect(try await s.rounds(planHash: plan).isEmpty, "the new run has no rounds yet")
        let (bytes, sha) = file(3)
        try await round(s, plan, 1)
        try await s.commitRound(planHash: plan, number: 1, survivors: ["a"], checkpoint: .init(round: 1, contentSHA256: sha, standardisation: "{}"),
                                content: bytes, fence: nil, at: Date(), actor: "broker")
        #expect(try await s.rounds(planHash: plan).map(\.state) == [.committed])

        // The compliance report tells the two runs' rounds apart.
        let report = ComplianceReport([AuditTrail(source: "broker", records: try await s.auditRecords())], filter: AuditFilter())
        let rounds = report.rounds.filter { $0.plan == plan }
        #expect(rounds.map { "\($0.run)/\($0.number) \($0.state)" } == ["1/1 aborted", "2/1 committed"])
    }

    @Test("the lease: one holder at a time, renewed by its holder (even past a lapse nobody used), taken over only after it lapses with the next term; writes under a taken term are refused, under a lapsed one nobody took are not", arguments: Backend.allCases)
    func lease(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let name = unique("lease"), t0 = Date()
        let a = try #require(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0, renewing: nil))
        #expect(a.term == 1 && a.holder == "broker-a")
        #expect(try await s.claimLease(name, holder: "broker-b", duration: 10, now: t0.addingTimeInterval(5), renewing: nil) == nil)
        let renewed = try #require(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0.addingTimeInterval(6), renewing: 1))
        #expect(renewed.term == 1 && renewed.expiresAt == t0.addingTimeInterval(16))
        // broker-a was frozen past its expiry, but nobody took the lease: renewing keeps term 1.
        let late = try #require(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0.addingTimeInterval(20), renewing: 1))
        #expect(late.term == 1 && late.expiresAt == t0.addingTimeInterval(30))
        #expect(try await s.claimLease(name, holder: "broker-b", duration: 10, now: t0.addingTimeInterval(29), renewing: nil) == nil)
        // Lapsed at 30 and nobody took it yet: broker-a is still the only leader and may write.
        let plan = unique("plan")
        try await s.startPlanRun(PlanRun(planHash: plan, planYAML: "x", submitter: "dana", state: .running, submittedAt: t0, updatedAt: t0),
                                 submission: .init(purpose: "research", rounds: 3, strategy: "fedavg"), actor: "dana")
        try await round(s, plan, 1)
        let (first, firstSHA) = file(2)
        try await s.commitRound(planHash: plan, number: 1, survivors: ["a"], checkpoint: .init(round: 1, contentSHA256: firstSHA, standardisation: "{}"),
                                content: first, fence: LeaseFence(name: name, holder: "broker-a", term: 1), at: t0.addingTimeInterval(30.2), actor: "broker")
        let b = try #require(try await s.claimLease(name, holder: "broker-b", duration: 10, now: t0.addingTimeInterval(30.5), renewing: nil))
        #expect(b.term == 2 && b.holder == "broker-b")
        #expect(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0.addingTimeInterval(31), renewing: 1) == nil,
                "a term once taken over cannot be renewed")

        // broker-a, term 1, tries to commit and to end a plan after the takeover: refused.
        try await round(s, plan, 2)
        let (bytes, sha) = file(3)
        let stale = LeaseFence(name: name, holder: "broker-a", term: 1)
        await #expect(throws: LedgerError.self) {
            try await s.commitRound(planHash: plan, number: 2, survivors: ["a"], checkpoint: .init(round: 2, contentSHA256: sha, standardisation: "{}"),
                                    content: bytes, fence: stale, at: t0.addingTimeInterval(31), actor: "broker")
        }
        await #expect(throws: LedgerError.self) {
            try await s.finishPlanRun(planHash: plan, state: .failed, reason: "stale", fence: stale, at: t0.addingTimeInterval(31), actor: "broker")
        }
        #expect(try await s.rounds(planHash: plan).first { $0.number == 2 }?.state == .evaluating)
        try await s.commitRound(planHash: plan, number: 2, survivors: ["a"], checkpoint: .init(round: 2, contentSHA256: sha, standardisation: "{}"),
                                content: bytes, fence: LeaseFence(name: name, holder: "broker-b", term: 2), at: t0.addingTimeInterval(31), actor: "broker")
        // Given up, it is free at once.
        try await s.releaseLease(name, holder: "broker-b", now: t0.addingTimeInterval(32))
        #expect(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0.addingTimeInterval(32.1), renewing: nil)?.term == 3)
        // A restart under the same name takes its running lease at once, with a new term.
        #expect(try await s.claimLease(name, holder: "broker-a", duration: 10, now: t0.addingTimeInterval(33), renewing: nil)?.term == 4)
        let changes = try await s.auditRecords().filter { $0.action == "broker.lease" && $0.subject == name }
        #expect(changes.map(\.actor) == ["broker-a", "broker-b", "broker-a", "broker-a"], "every new term is audited, renewals are not")
    }

    @Test("the lease rule: absent or lapsed leases are taken with the next term, a running one only by its holder; renewal holds while the term has not moved")
    func claimRule() {
        let now = Date(timeIntervalSince1970: 1000)
        #expect(BrokerLease.claim(current: nil, holder: "a", now: now, duration: 5) == BrokerLease(holder: "a", term: 1, expiresAt: now + 5))
        let held = BrokerLease(holder: "a", term: 4, expiresAt: now + 1)
        #expect(BrokerLease.claim(current: held, holder: "b", now: now, duration: 5) == nil)
        #expect(BrokerLease.claim(current: held, holder: "a", now: now, duration: 5, renewing: 4) == BrokerLease(holder: "a", term: 4, expiresAt: now + 5))
        #expect(BrokerLease.claim(current: held, holder: "a", now: now + 60, duration: 5, renewing: 4) == BrokerLease(holder: "a", term: 4, expiresAt: now + 65),
                "a lapse nobody used does not cost the holder its term")
        #expect(BrokerLease.claim(current: held, holder: "a", now: now, duration: 5, renewing: 3) == nil, "an older term is not renewed")
        #expect(BrokerLease.claim(current: held, holder: "b", now: now, duration: 5, renewing: 4) == nil, "nor another holder's")
        #expect(BrokerLease.claim(current: nil, holder: "a", now: now, duration: 5, renewing: 4) == nil)
        #expect(BrokerLease.claim(current: held, holder: "a", now: now, duration: 5)?.term == 5, "a restart under the same name starts a new term")
        #expect(BrokerLease.claim(current: held, holder: "b", now: now + 1, duration: 5) == BrokerLease(holder: "b", term: 5, expiresAt: now + 6))
        #expect(BrokerLease.claim(current: held, holder: "a", now: now + 2, duration: 5)?.term == 5, "a lapsed holder claiming afresh starts a new term too")
    }
}
