import Crypto
import Foundation
import Testing
import FedGatePrivacy
@_spi(Testing) @testable import FedGateStore

/// The two backends; every ledger test runs on both.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }

    static let migrations = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("migrations")

    /// The test PostgreSQL server's URL, or nil when none is set outside CI. In CI a missing
    /// PostgreSQL is a failure, never a silent skip.
    static func postgresServer() -> String? {
        guard let url = ProcessInfo.processInfo.environment["FEDGATE_TEST_POSTGRES_URL"] else {
            if ProcessInfo.processInfo.environment["CI"] != nil {
                Issue.record("CI must run the PostgreSQL ledger tests: FEDGATE_TEST_POSTGRES_URL is not set (see scripts/pg-test-cluster.sh)")
            }
            return nil
        }
        return url
    }

    /// A migrated ledger, or nil when PostgreSQL is not available outside CI. In CI a missing
    /// PostgreSQL is a failure, never a silent skip.
    func ledger() async throws -> PrivacyLedger? {
        let backend: any LedgerBackend
        switch self {
        case .sqlite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-ledger-\(UUID().uuidString).sqlite").path
            backend = try SQLiteLedger(path: path)
        case .postgres:
            guard let url = Self.postgresServer() else { return nil }
            // Each test gets its own database, so audit chains and tampering do not cross tests.
            backend = try await PostgresLedger.scratch(on: url, prefix: "fedgate_t_")
        }
        _ = try await backend.applyMigrations(try Migration.load(from: Self.migrations))
        return PrivacyLedger(backend: backend)
    }
}

func unique(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString.prefix(8))" }

/// Raw SQL against whichever backend, to tamper behind the ledger's back.
func tamper(_ ledger: PrivacyLedger, _ sql: String) async throws {
    if let s = ledger.backend as? SQLiteLedger { try await s.executeForTesting(sql) }
    if let p = ledger.backend as? PostgresLedger { try await p.executeForTesting(sql) }
}

@Suite("Privacy-budget ledger on SQLite and PostgreSQL")
struct LedgerTests {
    @Test("migrations apply once, record their checksums, and an edited migration is refused", arguments: Backend.allCases)
    func migrations(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger() else { return }
        let all = try Migration.load(from: Backend.migrations)
        #expect(try await ledger.backend.applyMigrations(all).isEmpty, "already applied")
        var edited = all
        edited[0] = Migration(version: all[0].version, name: all[0].name, sql: all[0].sql + "\n-- edited")
        await #expect(throws: LedgerError.self) { try await ledger.backend.applyMigrations(edited) }
    }

    @Test("the migrations built into fedgate are the migrations folder, byte for byte (run scripts/embed-migrations.py after adding one)")
    func embeddedMigrations() throws {
        let folder = try Migration.load(from: Backend.migrations)
        #expect(Migration.embedded.map(\.name) == folder.map(\.name))
        for (built, file) in zip(Migration.embedded, folder) {
            #expect(built.version == file.version && built.checksum == file.checksum, "\(file.name) differs from its embedded copy")
        }
        #expect(try Migration.load(from: nil as URL?) == Migration.embedded)
    }

    @Test("a new SQLite store and its write-ahead log are readable and writable by their owner only, like the keys")
    func ownerOnly() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-mode-\(UUID().uuidString).sqlite").path
        let store = try SQLiteLedger(path: path)
        _ = try await store.applyMigrations(Migration.embedded)
        for file in [path, path + "-wal"] where FileManager.default.fileExists(atPath: file) {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file): \(String(mode ?? 0, radix: 8))")
        }
        #expect(FileManager.default.fileExists(atPath: path + "-wal"), "the store writes ahead")
    }

    @Test("reserve within the caps, refuse beyond them naming the cap; commit and release settle once", arguments: Backend.allCases)
    func twoPhase(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger() else { return }
        let ds = unique("icu")
        try await ledger.backend.save(DatasetBudget(name: ds, delta: 1e-5, perPlanCap: 3, windowDays: 30, windowCap: 5, lifetimeCap: 10))
        let run = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200)   // ε ≈ 2.99
        let a = try await ledger.reserve(run, dataset: ds, plan: "plan-a", round: 1)
        // The same plan may not spend more than 3.
        await #expect(throws: LedgerError.budgetExceeded(dataset: ds, cap: "per-plan", epsilon: try epsilon(of: .composed([run, run]), delta: 1e-5), limit: 3)) {
            _ = try await ledger.reserve(run, dataset: ds, plan: "plan-a", round: 2)
        }
        try await ledger.commit(a)
        await #expect(throws: LedgerError.alreadySettled(id: a, state: .committed)) { try await ledger.release(a) }
        let b = try await ledger.reserve(run, dataset: ds, plan: "plan-b", round: 1)
        // A third run in the window breaks the 30-day cap of 5.
        do {
            _ = try await ledger.reserve(run, dataset: ds, plan: "plan-c", round: 1)
            Issue.record("the window cap was not enforced")
        } catch let LedgerError.budgetExceeded(_, cap, _, limit) {
            #expect(cap == "30-day" && limit == 5)
        }
        // Released reservations stop counting.
        try await ledger.release(b)
        let c = try await ledger.reserve(run, dataset: ds, plan: "plan-c", round: 1)
        let spent = try await ledger.spent(dataset: ds, delta: 1e-5)
        #expect(abs(spent.committed - (try epsilon(of: run, delta: 1e-5))) < 1e-12)
        #expect(spent.withReserved > spent.committed)
        let states = try await ledger.backend.entries(dataset: ds).map(\.state)
        #expect(states == [.committed, .released, .reserved])
        await #expect(throws: LedgerError.unknownReservation("nope")) { try await ledger.commit("nope") }
        // Both backends refuse a settlement back to reserved, and write nothing for it.
        let records = try await ledger.backend.auditRecords().count
        await #expect(throws: LedgerError.notASettlement(id: c)) { try await ledger.backend.settle(id: c, to: .reserved, at: Date(), actor: "admin") }
        #expect(try await ledger.backend.auditRecords().count == records)
        #expect(try await ledger.backend.entries(dataset: ds).map(\.state) == [.committed, .released, .reserved])
        await #expect(throws: LedgerError.unknownDataset("missing")) { _ = try await ledger.reserve(run, dataset: "missing", plan: "p", round: 1) }
        _ = c
    }

    @Test("a reservation left by a crash stays visible and can be released", arguments: Backend.allCases)
    func crashedReservation(_ backend: Backend) async throws {
        guard let first = try await backend.ledger() else { return }
        let ds = unique("bank")
        try await first.backend.save(DatasetBudget(name: ds, delta: 1e-5, perPlanCap: 5, lifetimeCap: 5))
        let id = try await first.reserve(.gaussian(noiseMultiplier: 2), dataset: ds, plan: "p", round: 1)
        // A new process (a new ledger object on the same store) finds it.
        let entries = try await first.backend.entries(dataset: ds)
        #expect(entries.map(\.id) == [id] && entries[0].state == .reserved)
        try await first.release(id)
        #expect(try await first.backend.entries(dataset: ds)[0].state == .released)
    }

    @Test("200 concurrent reservations never overspend the cap, and none is lost or counted twice", arguments: Backend.allCases)
    func concurrency(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger() else { return }
        let ds = unique("concurrent")
        let cap = 2.0
        try await ledger.backend.save(DatasetBudget(name: ds, delta: 1e-5, perPlanCap: 100, lifetimeCap: cap))
        let event = DPEvent.gaussian(noiseMultiplier: 16)
        // The most that fit, one after another.
        var fit = 0
        while try epsilon(of: .selfComposed(event: event, count: fit + 1), delta: 1e-5) <= cap { fit += 1 }
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for k in 0..<200 {
                group.addTask {
                    do { _ = try await ledger.reserve(event, dataset: ds, plan: "plan-\(k)", round: 1); return true } catch { return false }
                }
            }
            var results: [Bool] = []
            for await r in group { results.append(r) }
            return results
        }
        let entries = try await ledger.backend.entries(dataset: ds)
        #expect(outcomes.filter { $0 }.count == entries.count, "every success is recorded exactly once")
        #expect(entries.count == fit, "\(entries.count) reservations stored, \(fit) fit")
        #expect(Set(entries.map(\.id)).count == entries.count)
        #expect(try await ledger.spent(dataset: ds, delta: 1e-5).withReserved <= cap)
    }

    @Test("migration files split into statements outside quotes and comments")
    func statements() {
        let m = Migration(version: 1, name: "x.sql", sql: "-- a; comment\nCREATE TABLE a (x TEXT DEFAULT 'a;b');\n\nINSERT INTO a VALUES ('c');\n")
        #expect(m.statements == ["CREATE TABLE a (x TEXT DEFAULT 'a;b')", "INSERT INTO a VALUES ('c')"])
    }

    @Test("every budget, reservation, settlement and consent change is audited in order, and the chain verifies", arguments: Backend.allCases)
    func audited(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger() else { return }
        try await ledger.backend.save(DatasetBudget(name: "icu", delta: 1e-5, perPlanCap: 3, lifetimeCap: 3), actor: "admin:alice")
        let id = try await ledger.reserve(.gaussian(noiseMultiplier: 3), dataset: "icu", plan: "p1", round: 1, actor: "silo:hospital-a")
        try await ledger.commit(id, actor: "silo:hospital-a")
        // A refused reservation changes nothing and leaves no record.
        await #expect(throws: LedgerError.self) {
            _ = try await ledger.reserve(.gaussian(noiseMultiplier: 0.5), dataset: "icu", plan: "p2", round: 1)
        }
        let consent = ConsentRecord(dataset: "icu", purpose: "research", legalBasis: "GDPR 9(2)(j)", scope: "ICU admissions 2024",
                                    validFrom: Date(timeIntervalSince1970: 0))
        try await ledger.backend.addConsent(consent, actor: "admin:alice")
        try await ledger.backend.withdrawConsent(id: consent.id, at: Date(), actor: "admin:alice")
        let records = try await ledger.backend.auditRecords()
        #expect(records.map(\.action) == ["ledger.budget", "ledger.reserve", "ledger.commit", "consent.add", "consent.withdraw"])
        #expect(records.map(\.actor) == ["admin:alice", "silo:hospital-a", "silo:hospital-a", "admin:alice", "admin:alice"])
        #expect(AuditVerification.verify(records) == .intact(records: 5))
        #expect(try await ledger.backend.entries(dataset: "icu").count == 1)
    }

    @Test("audit verify names the first record edited, removed or reordered in the database", arguments: Backend.allCases)
    func tampering(_ backend: Backend) async throws {
        for attack in ["edit", "delete", "swap"] {
            guard let ledger = try await backend.ledger() else { return }
            for k in 1...4 { try await ledger.backend.audit(.other(action: "note", payload: "{\"k\":\(k)}"), actor: "admin", subject: "s\(k)", at: Date()) }
            #expect(AuditVerification.verify(try await ledger.backend.auditRecords()) == .intact(records: 4))
            switch attack {
            case "edit": try await tamper(ledger, "UPDATE audit_records SET payload = '{\"k\":99}' WHERE seq = 2")
            case "delete": try await tamper(ledger, "DELETE FROM audit_records WHERE seq = 2")
            default:
                // Swap the contents of records 2 and 3 (keeping their positions).
                try await tamper(ledger, "UPDATE audit_records SET seq = -2 WHERE seq = 2")
                try await tamper(ledger, "UPDATE audit_records SET seq = 2 WHERE seq = 3")
                try await tamper(ledger, "UPDATE audit_records SET seq = 3 WHERE seq = -2")
            }
            let result = AuditVerification.verify(try await ledger.backend.auditRecords())
            switch (attack, result) {
            case ("edit", .broken(2, let reason)): #expect(reason.contains("edited"))
            case ("delete", .broken(3, let reason)): #expect(reason.contains("missing"))
            case ("swap", .broken(2, _)): break
            default: Issue.record("\(attack): \(result)")
            }
        }
    }

    @Test("a withdrawn or expired consent stops covering its purpose at once", arguments: Backend.allCases)
    func consent(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger() else { return }
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        let research = ConsentRecord(dataset: "icu", purpose: "research", legalBasis: "consent", scope: "all",
                                     validFrom: t0, validUntil: t0.addingTimeInterval(86_400 * 365))
        let audit = ConsentRecord(dataset: "icu", purpose: "quality", legalBasis: "public interest", scope: "all", validFrom: t0)
        try await ledger.backend.addConsent(research, actor: "admin")
        try await ledger.backend.addConsent(audit, actor: "admin")
        let later = t0.addingTimeInterval(86_400)
        #expect(consentedPurposes(try await ledger.backend.consents(dataset: "icu"), at: later) == ["research", "quality"])
        #expect(consentedPurposes(try await ledger.backend.consents(dataset: "icu"), at: t0.addingTimeInterval(86_400 * 400)) == ["quality"])
        try await ledger.backend.withdrawConsent(id: audit.id, at: later, actor: "admin")
        #expect(consentedPurposes(try await ledger.backend.consents(dataset: "icu"), at: later.addingTimeInterval(1)) == ["research"])
        await #expect(throws: LedgerError.self) { try await ledger.backend.withdrawConsent(id: audit.id, at: later, actor: "admin") }
    }

    @Test("decisions store the policy version and plan, queue plans needing approval, and approvals expire", arguments: Backend.allCases)
    func approvals(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger(), let governance = ledger.backend as? any GovernanceBackend else { return }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let waiting = RecordedDecision(silo: "hospital-a", policyHash: "pol1", policyContent: "silo: hospital-a", planHash: "planA",
                                       planContent: "{}", outcome: "needs_approval", reasons: [], approvalValidHours: 48)
        try await governance.record(waiting, actor: "silo:hospital-a", at: t0)
        let refused = RecordedDecision(silo: "hospital-a", policyHash: "pol1", policyContent: "silo: hospital-a", planHash: "planB",
                                       planContent: "{}", outcome: "refused", reasons: ["purpose 'x' is not allowed"], approvalValidHours: nil)
        try await governance.record(refused, actor: "silo:hospital-a", at: t0)
        #expect(try await governance.approval(planHash: "planB", silo: "hospital-a") == nil, "a refused plan is not queued")
        let pending = try #require(try await governance.approval(planHash: "planA", silo: "hospital-a"))
        #expect(pending.state == .pending && !pending.allows(at: t0))
        try await governance.decideApproval(planHash: "planA", silo: "hospital-a", approve: true, actor: "admin:alice", at: t0)
        let approved = try #require(try await governance.approval(planHash: "planA", silo: "hospital-a"))
        #expect(approved.allows(at: t0.addingTimeInterval(3600)))
        #expect(!approved.allows(at: t0.addingTimeInterval(49 * 3600)), "an approval expires")
        await #expect(throws: LedgerError.self) {
            try await governance.decideApproval(planHash: "planA", silo: "hospital-a", approve: false, actor: "admin:bob", at: t0)
        }
        let actions = try await ledger.backend.auditRecords().map(\.action)
        #expect(actions == ["policy.decision", "policy.decision", "plan.approve"])
        #expect(AuditVerification.verify(try await ledger.backend.auditRecords()) == .intact(records: 3))
    }

    @Test("an enrolment invitation enrols its silo once, before it expires, and nobody else", arguments: Backend.allCases)
    func invitations(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger(), let registry = ledger.backend as? any RegistryBackend else { return }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        try await registry.invite(EnrolmentInvitation(silo: "clinic-c", region: "eu-west", jurisdiction: "EU", tokenSHA256: "t1",
                                                      createdAt: t0, expiresAt: t0.addingTimeInterval(3600)), actor: "admin")
        try await registry.invite(EnrolmentInvitation(silo: "clinic-d", region: "eu-west", jurisdiction: "EU", tokenSHA256: "t2",
                                                      createdAt: t0, expiresAt: t0.addingTimeInterval(60)), actor: "admin")
        func party(_ id: String, _ region: String = "eu-west") -> Party {
            Party(id: id, kind: .silo, region: region, jurisdiction: "", certificateSHA256: "ff", enrolledAt: t0)
        }
        func refusal(_ body: () async throws -> Void) async -> String {
            do { try await body(); return "accepted" } catch { return "\(error)" }
        }
        #expect(await refusal { try await registry.redeem(tokenSHA256: "t1", enrolling: party("mallory"), at: t0) }.contains("for silo 'clinic-c'"))
        #expect(await refusal { try await registry.redeem(tokenSHA256: "t1", enrolling: party("clinic-c", "us-east"), at: t0) }.contains("region"))
        #expect(await refusal { try await registry.redeem(tokenSHA256: "nope", enrolling: party("clinic-c"), at: t0) }.contains("unknown"))
        #expect(await refusal { try await registry.redeem(tokenSHA256: "t2", enrolling: party("clinic-d"), at: t0.addingTimeInterval(61)) }.contains("expired"))
        try await registry.redeem(tokenSHA256: "t1", enrolling: party("clinic-c"), at: t0.addingTimeInterval(10))
        #expect(try await registry.party("clinic-c")?.jurisdiction == "EU")
        #expect(try await registry.invitation(tokenSHA256: "t1")?.usedAt != nil)
        #expect(await refusal { try await registry.redeem(tokenSHA256: "t1", enrolling: party("clinic-c"), at: t0.addingTimeInterval(20)) }.contains("already used"))
        let actions = try await ledger.backend.auditRecords().map(\.action)
        #expect(actions == ["enrolment.invite", "enrolment.invite", "enrolment.redeem"], "refusals change nothing: \(actions)")
        #expect(try await ledger.backend.auditRecords().allSatisfy { !$0.payload.contains("t1") })
    }

    @Test("silos and brokers, rounds along their state machine, and model versions with lineage are stored and audited", arguments: Backend.allCases)
    func registry(_ backend: Backend) async throws {
        guard let ledger = try await backend.ledger(), let registry = ledger.backend as? any RegistryBackend else { return }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        try await registry.enroll(Party(id: "hospital-a", kind: .silo, region: "eu-west", jurisdiction: "EU", certificateSHA256: "ab12", enrolledAt: t0), actor: "admin")
        try await registry.enroll(Party(id: "broker-1", kind: .broker, region: "eu-central", jurisdiction: "EU", certificateSHA256: "cd34", enrolledAt: t0), actor: "admin")
        #expect(try await registry.party("hospital-a")?.region == "eu-west")
        try await registry.revoke(party: "hospital-a", at: t0.addingTimeInterval(60), actor: "admin")
        #expect(try await registry.party("hospital-a")?.revokedAt != nil)
        #expect(try await registry.revocations().identities == ["hospital-a"])
        await #expect(throws: LedgerError.self) { try await registry.revoke(party: "hospital-a", at: t0, actor: "admin") }

        try await registry.openRound(RoundRecord(planHash: "plan", number: 1, state: .planned, sampled: ["a", "b", "c"], survivors: [],
                                                 deadline: t0.addingTimeInterval(600), updatedAt: t0), actor: "broker-1")
        for state in [RoundRecord.State.offered, .training, .aggregating] {
            try await registry.advanceRound(planHash: "plan", number: 1, to: state, survivors: ["a", "b"], at: t0, actor: "broker-1")
        }
        await #expect(throws: LedgerError.self) {
            try await registry.advanceRound(planHash: "plan", number: 1, to: .committed, survivors: [], at: t0, actor: "broker-1")
        }
        try await registry.advanceRound(planHash: "plan", number: 1, to: .aborted, survivors: ["a", "b"], at: t0, actor: "broker-1")
        let rounds = try await registry.rounds(planHash: "plan")
        #expect(rounds.map(\.state) == [.aborted] && rounds[0].sampled == ["a", "b", "c"] && rounds[0].survivors == ["a", "b"])

        // A version's file is stored by its hash, once; a file that does not hash to the version's
        // content hash, or a version whose file was never stored, is refused and leaves no trace.
        let file: [UInt8] = Array("a model file".utf8) + [0, 255, 7]
        let sha = SHA256.hash(data: file).map { String(format: "%02x", $0) }.joined()
        await #expect(throws: LedgerError.self) {
            _ = try await registry.addModelVersion(ModelVersion(version: 0, planHash: "plan", round: 1, contentSHA256: "ee", participants: [],
                                                                epsilonPerSilo: [:], metrics: [:], parent: nil, createdAt: t0), content: file, actor: "broker-1")
        }
        await #expect(throws: LedgerError.self) {
            _ = try await registry.addModelVersion(ModelVersion(version: 0, planHash: "plan", round: 1, contentSHA256: "ee", participants: [],
                                                                epsilonPerSilo: [:], metrics: [:], parent: nil, createdAt: t0), actor: "broker-1")
        }
        let v1 = try await registry.addModelVersion(ModelVersion(version: 0, planHash: "plan", round: 1, contentSHA256: sha, participants: ["a", "b"],
                                                                 epsilonPerSilo: ["a": 1.5, "b": 1.5], metrics: ["accuracy": 0.95], parent: nil, createdAt: t0),
                                                    content: file, actor: "broker-1")
        let v2 = try await registry.addModelVersion(ModelVersion(version: 0, planHash: "plan", round: 2, contentSHA256: sha, participants: ["a"],
                                                                 epsilonPerSilo: ["a": 2.0], metrics: ["accuracy": 0.96], parent: v1, createdAt: t0), actor: "broker-1")
        #expect((v1, v2) == (1, 2))
        #expect(try await registry.modelContent(sha256: sha) == file)
        #expect(try await registry.modelContent(sha256: "ee") == nil)
        let versions = try await registry.modelVersions()
        #expect(versions.map(\.parent) == [nil, 1] && versions[0].epsilonPerSilo == ["a": 1.5, "b": 1.5] && versions[1].metrics == ["accuracy": 0.96])
        let actions = try await ledger.backend.auditRecords().map(\.action)
        #expect(actions == ["party.enroll", "party.enroll", "party.revoke", "round.planned", "round.offered", "round.training",
                            "round.aggregating", "round.aborted", "model.version", "model.version"])
        #expect(AuditVerification.verify(try await ledger.backend.auditRecords()) == .intact(records: 10))
    }
}
