import FedGatePrivacy
import Foundation
import GRDB

/// The embedded ledger: SQLite through GRDB. GRDB serialises writes, so a reservation's cap check
/// and insert run in one transaction no other writer interleaves with.
public final class SQLiteLedger: LedgerBackend, GovernanceBackend, RegistryBackend {
    private let pool: DatabasePool

    /// Opens (or creates) the database file.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        do { pool = try DatabasePool(path: path, configuration: config) } catch {
            throw LedgerError.storage("cannot open SQLite database \(path): \(error)")
        }
    }

    public func applyMigrations(_ migrations: [Migration]) async throws -> [String] {
        try await wrap {
            try await pool.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    checksum TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)
                    """)
                var applied: [Int: String] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT version, checksum FROM schema_migrations") {
                    applied[try row.field("version")] = try row.field("checksum")
                }
                let todo = try Migration.pending(migrations, applied: applied)
                for m in todo {
                    try db.execute(sql: m.sql)
                    try db.execute(sql: "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                                   arguments: [m.version, m.name, m.checksum, Date().timeIntervalSince1970])
                }
                return todo.map(\.name)
            }
        }
    }

    public func save(_ b: DatasetBudget, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { db in
            try db.execute(sql: """
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """, arguments: [b.name, b.delta, b.perPlanCap, b.windowDays, b.windowCap, b.lifetimeCap])
            return (b.name, .budgetSet(.init(b)))
        }
    }

    public func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws {
        try await audited(actor: actor, at: now) { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM datasets WHERE name = ?", arguments: [entry.dataset]) else {
                throw LedgerError.unknownDataset(entry.dataset)
            }
            let budget = try Self.budget(row)
            let active = try Self.entries(db, dataset: entry.dataset).filter { $0.state != .released }
            try BudgetCheck.check(budget, active: active, adding: entry, now: now)
            let json = try entry.event.canonicalJSON()
            try db.execute(sql: """
                INSERT INTO ledger_entries (id, dataset, plan_hash, round, event, state, created_at, settled_at)
                VALUES (?, ?, ?, ?, ?, 'reserved', ?, NULL)
                """, arguments: [entry.id, entry.dataset, entry.planHash, entry.round, json, entry.createdAt.timeIntervalSince1970])
            return (entry.dataset, .budgetReserved(.init(id: entry.id, dataset: entry.dataset, plan: entry.planHash, round: entry.round, event: json)))
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let current = try String.fetchOne(db, sql: "SELECT state FROM ledger_entries WHERE id = ?", arguments: [id]) else {
                throw LedgerError.unknownReservation(id)
            }
            guard current == LedgerState.reserved.rawValue else {
                throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
            }
            guard state != .reserved else { throw LedgerError.notASettlement(id: id) }
            try db.execute(sql: "UPDATE ledger_entries SET state = ?, settled_at = ? WHERE id = ? AND state = 'reserved'",
                           arguments: [state.rawValue, at.timeIntervalSince1970, id])
            let dataset = try String.fetchOne(db, sql: "SELECT dataset FROM ledger_entries WHERE id = ?", arguments: [id]) ?? ""
            return (dataset, .budgetSettled(.init(id: id, state: state)))
        }
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await wrap { try await pool.read { db in try Self.entries(db, dataset: dataset) } }
    }

    public func auditTail() async throws -> (seq: Int, hash: String)? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").map { (try $0.field("seq"), try $0.field("hash")) }
            }
        }
    }

    public func record(_ h: AuditHead) async throws {
        try await wrap {
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO audit_heads (signer, seq, hash, at, certificate, signature) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (signer, seq) DO NOTHING
                    """, arguments: [h.signer, h.seq, h.hash, h.at.timeIntervalSince1970, h.certificate, h.signature])
            }
        }
    }

    public func auditHeads() async throws -> [AuditHead] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM audit_heads ORDER BY at, signer, seq").map { r in
                    try Self.head(r)
                }
            }
        }
    }

    public func witness(_ h: AuditHead, receivedAt: Date) async throws {
        try await wrap {
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO audit_witnessed (signer, seq, hash, at, certificate, signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (signer, seq) DO NOTHING
                    """, arguments: [h.signer, h.seq, h.hash, h.at.timeIntervalSince1970, h.certificate, h.signature, receivedAt.timeIntervalSince1970])
            }
        }
    }

    public func witnessedHeads(signer: String?) async throws -> [AuditHead] {
        try await wrap {
            try await pool.read { db in
                let rows = try signer.map { try Row.fetchAll(db, sql: "SELECT * FROM audit_witnessed WHERE signer = ? ORDER BY at, seq", arguments: [$0]) }
                    ?? Row.fetchAll(db, sql: "SELECT * FROM audit_witnessed ORDER BY at, signer, seq")
                return try rows.map { r in
                    try Self.head(r)
                }
            }
        }
    }

    public func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry]) {
        try await wrap {
            try await pool.read { db in
                let budgets = try Row.fetchAll(db, sql: "SELECT * FROM datasets ORDER BY name").map { row in
                    try Self.budget(row)
                }
                return (budgets, try Self.entries(db, dataset: nil))
            }
        }
    }

    public func budget(_ dataset: String) async throws -> DatasetBudget? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM datasets WHERE name = ?", arguments: [dataset]).map { row in
                    try Self.budget(row)
                }
            }
        }
    }

    public func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { _ in (subject, event) }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM audit_records ORDER BY seq").map { r in
                    AuditRecord(seq: try r.field("seq"), at: Date(timeIntervalSince1970: try r.field("at")), actor: try r.field("actor"), action: try r.field("action"),
                                subject: try r.field("subject"), payload: try r.field("payload"), previousHash: try r.field("previous_hash"), hash: try r.field("hash"))
                }
            }
        }
    }

    public func addConsent(_ c: ConsentRecord, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { db in
            try db.execute(sql: """
                INSERT INTO consents (id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
                """, arguments: [c.id, c.dataset, c.purpose, c.legalBasis, c.scope, c.validFrom.timeIntervalSince1970,
                                 c.validUntil?.timeIntervalSince1970])
            return (c.dataset, .consentAdded(.init(c)))
        }
    }

    public func withdrawConsent(id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let dataset = try String.fetchOne(db, sql: "SELECT dataset FROM consents WHERE id = ? AND withdrawn_at IS NULL", arguments: [id]) else {
                throw LedgerError.storage("no active consent '\(id)' to withdraw")
            }
            try db.execute(sql: "UPDATE consents SET withdrawn_at = ? WHERE id = ?", arguments: [at.timeIntervalSince1970, id])
            return (dataset, .consentWithdrawn(.init(id: id)))
        }
    }

    public func consents(dataset: String) async throws -> [ConsentRecord] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM consents WHERE dataset = ? ORDER BY valid_from, id", arguments: [dataset]).map { r in
                    let until: Double? = try r.field("valid_until"), withdrawn: Double? = try r.field("withdrawn_at")
                    return ConsentRecord(id: try r.field("id"), dataset: try r.field("dataset"), purpose: try r.field("purpose"), legalBasis: try r.field("legal_basis"),
                                         scope: try r.field("scope"), validFrom: Date(timeIntervalSince1970: try r.field("valid_from")),
                                         validUntil: until.map(Date.init(timeIntervalSince1970:)),
                                         withdrawnAt: withdrawn.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }

    /// Appends the next audit record inside the caller's write transaction (GRDB has one writer,
    /// so appends are serialised and the chain cannot fork).
    private static func append(_ db: Database, actor: String, subject: String, event: AuditEvent, at: Date) throws {
        let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
        let r = AuditRecord.next(after: last.map { (seq: $0["seq"], hash: $0["hash"]) }, at: at, actor: actor,
                                 action: event.action, subject: subject, payload: event.payload)
        try db.execute(sql: "INSERT INTO audit_records (seq, at, actor, action, subject, payload, previous_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       arguments: [r.seq, r.at.timeIntervalSince1970, r.actor, r.action, r.subject, r.payload, r.previousHash, r.hash])
    }

    public func record(_ d: RecordedDecision, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { db in
            let t = at.timeIntervalSince1970
            try db.execute(sql: "INSERT INTO policy_versions (hash, silo, content, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT(hash) DO NOTHING",
                           arguments: [d.policyHash, d.silo, d.policyContent, t])
            try db.execute(sql: "INSERT INTO plans (hash, content, recorded_at) VALUES (?, ?, ?) ON CONFLICT(hash) DO NOTHING",
                           arguments: [d.planHash, d.planContent, t])
            if d.outcome == "needs_approval", let hours = d.approvalValidHours {
                try db.execute(sql: """
                    INSERT INTO approvals (plan_hash, silo, policy_hash, state, requested_at, valid_hours) VALUES (?, ?, ?, 'pending', ?, ?)
                    ON CONFLICT(plan_hash, silo) DO NOTHING
                    """, arguments: [d.planHash, d.silo, d.policyHash, t, hours])
            }
            return (d.planHash, .policyDecision(d.auditEvent))
        }
    }

    public func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let state = try String.fetchOne(db, sql: "SELECT state FROM approvals WHERE plan_hash = ? AND silo = ?", arguments: [planHash, silo]) else {
                throw LedgerError.storage("no approval request for plan \(planHash) at silo '\(silo)'")
            }
            guard state == "pending" else { throw LedgerError.storage("plan \(planHash) was already \(state) at silo '\(silo)'") }
            try db.execute(sql: "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? WHERE plan_hash = ? AND silo = ?",
                           arguments: [approve ? "approved" : "rejected", actor, at.timeIntervalSince1970, planHash, silo])
            return (planHash, .planApproval(approved: approve, .init(plan: planHash, silo: silo)))
        }
    }

    public func approval(planHash: String, silo: String) async throws -> Approval? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM approvals WHERE plan_hash = ? AND silo = ?", arguments: [planHash, silo]).map { r in
                    let decided: Double? = try r.field("decided_at")
                    return Approval(planHash: try r.field("plan_hash"), silo: try r.field("silo"), policyHash: try r.field("policy_hash"),
                                    state: Approval.State(rawValue: try r.field("state")) ?? .rejected, requestedAt: Date(timeIntervalSince1970: try r.field("requested_at")),
                                    validHours: try r.field("valid_hours"), decidedBy: try r.field("decided_by"), decidedAt: decided.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }

    public func enroll(_ p: Party, actor: String) async throws {
        try await audited(actor: actor, at: p.enrolledAt) { db in
            try Self.upsert(db, p)
            return (p.id, .partyEnrolled(.init(p)))
        }
    }

    /// Enrols or re-enrols a party (a re-enrolled party is no longer revoked).
    private static func upsert(_ db: Database, _ p: Party) throws {
        try db.execute(sql: """
            INSERT INTO parties (id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)
            ON CONFLICT(id) DO UPDATE SET region = excluded.region, jurisdiction = excluded.jurisdiction,
            certificate_sha256 = excluded.certificate_sha256, enrolled_at = excluded.enrolled_at, revoked_at = NULL
            """, arguments: [p.id, p.kind.rawValue, p.region, p.jurisdiction, p.certificateSHA256, p.enrolledAt.timeIntervalSince1970])
    }

    public func revoke(party id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard try String.fetchOne(db, sql: "SELECT id FROM parties WHERE id = ? AND revoked_at IS NULL", arguments: [id]) != nil else {
                throw LedgerError.storage("no enrolled party '\(id)' to revoke")
            }
            try db.execute(sql: "UPDATE parties SET revoked_at = ? WHERE id = ?", arguments: [at.timeIntervalSince1970, id])
            return (id, .partyRevoked)
        }
    }

    public func invite(_ i: EnrolmentInvitation, actor: String) async throws {
        try await audited(actor: actor, at: i.createdAt) { db in
            try db.execute(sql: """
                INSERT INTO enrolment_invitations (token_sha256, silo, region, jurisdiction, created_at, expires_at, used_at)
                VALUES (?, ?, ?, ?, ?, ?, NULL)
                """, arguments: [i.tokenSHA256, i.silo, i.region, i.jurisdiction, i.createdAt.timeIntervalSince1970, i.expiresAt.timeIntervalSince1970])
            return (i.silo, .enrolmentInvited(.init(region: i.region, jurisdiction: i.jurisdiction, expiresAt: i.expiresAt.timeIntervalSince1970)))
        }
    }

    public func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation? {
        try await wrap { try await pool.read { db in try Self.invitation(db, tokenSHA256) } }
    }

    private static func invitation(_ db: Database, _ hash: String) throws -> EnrolmentInvitation? {
        try Row.fetchOne(db, sql: "SELECT * FROM enrolment_invitations WHERE token_sha256 = ?", arguments: [hash]).map { r in
            let used: Double? = try r.field("used_at")
            return EnrolmentInvitation(silo: try r.field("silo"), region: try r.field("region"), jurisdiction: try r.field("jurisdiction"), tokenSHA256: try r.field("token_sha256"),
                                       createdAt: Date(timeIntervalSince1970: try r.field("created_at")), expiresAt: Date(timeIntervalSince1970: try r.field("expires_at")),
                                       usedAt: used.map(Date.init(timeIntervalSince1970:)))
        }
    }

    public func redeem(tokenSHA256: String, enrolling p: Party, at: Date) async throws {
        try await audited(actor: p.id, at: at) { db in
            guard let invitation = try Self.invitation(db, tokenSHA256) else { throw LedgerError.storage("unknown enrolment token") }
            if let refusal = invitation.refusal(for: p.id, region: p.region, at: at) { throw LedgerError.storage(refusal) }
            try db.execute(sql: "UPDATE enrolment_invitations SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL",
                           arguments: [at.timeIntervalSince1970, tokenSHA256])
            let enrolled = invitation.party(p, at: at)
            try Self.upsert(db, enrolled)
            return (p.id, .enrolmentRedeemed(.init(enrolled)))
        }
    }

    public func revoke(_ r: Revocation, actor: String) async throws {
        try await audited(actor: actor, at: r.revokedAt) { db in
            try db.execute(sql: "INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING",
                           arguments: [r.kind.rawValue, r.value, r.reason, r.revokedAt.timeIntervalSince1970])
            if r.kind == .identity {
                try db.execute(sql: "UPDATE parties SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [r.revokedAt.timeIntervalSince1970, r.value])
            }
            return (r.value, .revoked(.init(kind: r.kind.rawValue, value: r.value, reason: r.reason)))
        }
    }

    public func revocations() async throws -> RevocationList {
        try await wrap {
            try await pool.read { db in
                var list = RevocationList(identities: Set(try String.fetchAll(db, sql: "SELECT id FROM parties WHERE revoked_at IS NOT NULL")))
                for row in try Row.fetchAll(db, sql: "SELECT kind, value FROM revocations") {
                    guard let kind = Revocation.Kind(rawValue: try row.field("kind")) else { continue }
                    list.add(kind, try row.field("value"))
                }
                return list
            }
        }
    }

    public func party(_ id: String) async throws -> Party? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM parties WHERE id = ?", arguments: [id]).map { r in
                    let revoked: Double? = try r.field("revoked_at")
                    return Party(id: try r.field("id"), kind: Party.Kind(rawValue: try r.field("kind")) ?? .silo, region: try r.field("region"), jurisdiction: try r.field("jurisdiction"),
                                 certificateSHA256: try r.field("certificate_sha256"), enrolledAt: Date(timeIntervalSince1970: try r.field("enrolled_at")),
                                 revokedAt: revoked.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }

    public func openRound(_ r: RoundRecord, actor: String) async throws {
        try await audited(actor: actor, at: r.updatedAt) { db in
            try db.execute(sql: "INSERT INTO rounds (plan_hash, number, state, sampled, survivors, deadline, updated_at) VALUES (?, ?, 'planned', ?, ?, ?, ?)",
                           arguments: [r.planHash, r.number, RegistryJSON.encode(r.sampled), RegistryJSON.encode(r.survivors),
                                       r.deadline.timeIntervalSince1970, r.updatedAt.timeIntervalSince1970])
            return (r.planHash, .roundPlanned(.init(round: r.number, sampled: r.sampled)))
        }
    }

    public func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            let current = try String.fetchOne(db, sql: "SELECT state FROM rounds WHERE plan_hash = ? AND number = ?", arguments: [planHash, number])
            try RegistryJSON.transition(from: current, to: state, planHash: planHash, number: number)
            try db.execute(sql: "UPDATE rounds SET state = ?, survivors = ?, updated_at = ? WHERE plan_hash = ? AND number = ?",
                           arguments: [state.rawValue, RegistryJSON.encode(survivors), at.timeIntervalSince1970, planHash, number])
            return (planHash, .roundAdvanced(state, .init(round: number, survivors: survivors, checkpointSHA256: nil)))
        }
    }

    public func rounds(planHash: String) async throws -> [RoundRecord] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM rounds WHERE plan_hash = ? ORDER BY number", arguments: [planHash]).map { r in
                    RoundRecord(planHash: try r.field("plan_hash"), number: try r.field("number"), state: RoundRecord.State(rawValue: try r.field("state")) ?? .aborted,
                                sampled: RegistryJSON.strings(try r.field("sampled")), survivors: RegistryJSON.strings(try r.field("survivors")),
                                deadline: Date(timeIntervalSince1970: try r.field("deadline")), updatedAt: Date(timeIntervalSince1970: try r.field("updated_at")))
                }
            }
        }
    }

    public func addModelVersion(_ m: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int {
        if let content { try ModelContent.check(content, m.contentSHA256) }
        return try await wrap {
            try await pool.write { db in
                if let content {
                    try db.execute(sql: "INSERT INTO model_content (content_sha256, bytes) VALUES (?, ?) ON CONFLICT (content_sha256) DO NOTHING",
                                   arguments: [m.contentSHA256.lowercased(), Data(content)])
                } else if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM model_content WHERE content_sha256 = ?", arguments: [m.contentSHA256.lowercased()]) == 0 {
                    throw LedgerError.storage("no model file with SHA-256 \(m.contentSHA256.prefix(12))… is stored; pass the file")
                }
                let version = (try Int.fetchOne(db, sql: "SELECT MAX(version) FROM model_versions") ?? 0) + 1
                try db.execute(sql: """
                    INSERT INTO model_versions (version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [version, m.planHash, m.round, m.contentSHA256.lowercased(), RegistryJSON.encode(m.participants),
                                     RegistryJSON.encode(m.epsilonPerSilo), RegistryJSON.encode(m.metrics), m.parent, m.createdAt.timeIntervalSince1970])
                try Self.append(db, actor: actor, subject: m.planHash, event: .modelVersioned(.init(
                    version: version, round: m.round, contentSHA256: m.contentSHA256, epsilonPerSilo: m.epsilonPerSilo)), at: m.createdAt)
                return version
            }
        }
    }

    public func modelVersions() async throws -> [ModelVersion] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM model_versions ORDER BY version").map { r in
                    ModelVersion(version: try r.field("version"), planHash: try r.field("plan_hash"), round: try r.field("round"), contentSHA256: try r.field("content_sha256"),
                                 participants: RegistryJSON.strings(try r.field("participants")), epsilonPerSilo: RegistryJSON.numbers(try r.field("epsilon_per_silo")),
                                 metrics: RegistryJSON.numbers(try r.field("metrics")), parent: try r.field("parent"), createdAt: Date(timeIntervalSince1970: try r.field("created_at")))
                }
            }
        }
    }

    public func modelContent(sha256: String) async throws -> [UInt8]? {
        try await wrap {
            try await pool.read { db in
                try Data.fetchOne(db, sql: "SELECT bytes FROM model_content WHERE content_sha256 = ?", arguments: [sha256.lowercased()]).map { [UInt8]($0) }
            }
        }
    }

    /// Runs raw SQL: for tests that tamper with the store behind the ledger's back.
    func executeForTesting(_ sql: String) async throws {
        try await pool.write { db in try db.execute(sql: sql) }
    }

    /// A `datasets` row.
    private static func budget(_ row: Row) throws -> DatasetBudget {
        DatasetBudget(name: try row.field("name"), delta: try row.field("delta"), perPlanCap: try row.field("per_plan_cap"),
                      windowDays: try row.field("window_days"), windowCap: try row.field("window_cap"), lifetimeCap: try row.field("lifetime_cap"))
    }

    /// An `audit_heads` or `audit_witnessed` row.
    private static func head(_ r: Row) throws -> AuditHead {
        AuditHead(signer: try r.field("signer"), seq: try r.field("seq"), hash: try r.field("hash"), at: Date(timeIntervalSince1970: try r.field("at")),
                  certificate: try r.field("certificate"), signature: try r.field("signature"))
    }

    /// One data set's entries, or every entry (`dataset` nil).
    private static func entries(_ db: Database, dataset: String?) throws -> [LedgerEntry] {
        let rows = try dataset.map { try Row.fetchAll(db, sql: "SELECT * FROM ledger_entries WHERE dataset = ? ORDER BY created_at, id", arguments: [$0]) }
            ?? Row.fetchAll(db, sql: "SELECT * FROM ledger_entries ORDER BY created_at, id")
        return try rows.map { row in
            let settled: Double? = try row.field("settled_at")
            return LedgerEntry(id: try row.field("id"), dataset: try row.field("dataset"), planHash: try row.field("plan_hash"), round: try row.field("round"),
                               event: try DPEvent.fromJSON(try row.field("event")),
                               state: try LedgerState(stored: try row.field("state")),
                               createdAt: Date(timeIntervalSince1970: try row.field("created_at")),
                               settledAt: settled.map(Date.init(timeIntervalSince1970:)))
        }
    }

    /// Runs `change` and appends its audit record in one write transaction: either both land or neither.
    /// `change` returns the record's subject and event.
    private func audited(actor: String, at: Date,
                         _ change: @escaping @Sendable (Database) throws -> (subject: String, event: AuditEvent)) async throws {
        try await wrap {
            try await pool.write { db in
                let (subject, event) = try change(db)
                try Self.append(db, actor: actor, subject: subject, event: event, at: at)
            }
        }
    }

    /// Ledger errors pass through; database errors become `LedgerError.storage`.
    @discardableResult
    private func wrap<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as LedgerError { throw e } catch let e as PrivacyError {
            throw LedgerError.storage("a stored DP event is invalid: \(e)")
        } catch { throw LedgerError.storage("\(error)") }
    }
}

extension SQLiteLedger: PlanRunBackend {
    public func startPlanRun(_ run: PlanRun, submission: AuditEvent.PlanSubmission, actor: String) async throws {
        try await audited(actor: actor, at: run.submittedAt) { db in
            if let state = try String.fetchOne(db, sql: "SELECT state FROM plan_runs WHERE plan_hash = ?", arguments: [run.planHash]), state == "running" {
                throw LedgerError.storage("plan \(run.planHash.prefix(12))… is already running")
            }
            try db.execute(sql: """
                INSERT INTO plan_runs (plan_hash, plan_yaml, submitter, state, reason, checkpoint_round, checkpoint_sha256, standardisation, submitted_at, updated_at)
                VALUES (?, ?, ?, 'running', NULL, NULL, NULL, NULL, ?, ?)
                ON CONFLICT (plan_hash) DO UPDATE SET plan_yaml = excluded.plan_yaml, submitter = excluded.submitter, state = 'running',
                reason = NULL, checkpoint_round = NULL, checkpoint_sha256 = NULL, standardisation = NULL,
                submitted_at = excluded.submitted_at, updated_at = excluded.updated_at
                """, arguments: [run.planHash, run.planYAML, run.submitter, run.submittedAt.timeIntervalSince1970, run.submittedAt.timeIntervalSince1970])
            return (run.planHash, .planSubmitted(submission))
        }
    }

    public func commitRound(planHash: String, number: Int, survivors: [String], checkpoint: PlanRun.Checkpoint, content: [UInt8],
                            fence: LeaseFence?, at: Date, actor: String) async throws {
        try ModelContent.check(content, checkpoint.contentSHA256)
        let bytes = Data(content)
        try await audited(actor: actor, at: at) { db in
            if let fence { try fence.check(try Self.lease(db, fence.name)) }
            let current = try String.fetchOne(db, sql: "SELECT state FROM rounds WHERE plan_hash = ? AND number = ?", arguments: [planHash, number])
            try RegistryJSON.transition(from: current, to: .committed, planHash: planHash, number: number)
            try db.execute(sql: "UPDATE rounds SET state = 'committed', survivors = ?, updated_at = ? WHERE plan_hash = ? AND number = ?",
                           arguments: [RegistryJSON.encode(survivors), at.timeIntervalSince1970, planHash, number])
            let sha = checkpoint.contentSHA256.lowercased()
            let previous = try String.fetchOne(db, sql: "SELECT checkpoint_sha256 FROM plan_runs WHERE plan_hash = ?", arguments: [planHash])
            try db.execute(sql: "INSERT INTO model_content (content_sha256, bytes) VALUES (?, ?) ON CONFLICT (content_sha256) DO NOTHING",
                           arguments: [sha, bytes])
            try db.execute(sql: """
                UPDATE plan_runs SET checkpoint_round = ?, checkpoint_sha256 = ?, standardisation = ?, updated_at = ? WHERE plan_hash = ? AND state = 'running'
                """, arguments: [checkpoint.round, sha, checkpoint.standardisation, at.timeIntervalSince1970, planHash])
            guard db.changesCount == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here; round \(number) not committed") }
            // The checkpoint it replaces goes, unless a version or another plan still points to it.
            if let previous, previous != sha {
                try db.execute(sql: """
                    DELETE FROM model_content WHERE content_sha256 = ?
                    AND NOT EXISTS (SELECT 1 FROM model_versions WHERE content_sha256 = ?)
                    AND NOT EXISTS (SELECT 1 FROM plan_runs WHERE checkpoint_sha256 = ?)
                    """, arguments: [previous, previous, previous])
            }
            return (planHash, .roundAdvanced(.committed, .init(round: number, survivors: survivors, checkpointSHA256: sha)))
        }
    }

    public func finishPlanRun(planHash: String, state: PlanRun.State, reason: String?, fence: LeaseFence?, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            if let fence { try fence.check(try Self.lease(db, fence.name)) }
            try db.execute(sql: "UPDATE plan_runs SET state = ?, reason = ?, updated_at = ? WHERE plan_hash = ? AND state = 'running'",
                           arguments: [state.rawValue, reason, at.timeIntervalSince1970, planHash])
            guard db.changesCount == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here") }
            return (planHash, .planEnded(state, .init(reason: reason)))
        }
    }

    public func planRuns() async throws -> [PlanRun] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM plan_runs ORDER BY submitted_at, plan_hash").map { r in
                    let round: Int? = try r.field("checkpoint_round"), sha: String? = try r.field("checkpoint_sha256"), std: String? = try r.field("standardisation")
                    let checkpoint = round.flatMap { n in sha.flatMap { s in std.map { PlanRun.Checkpoint(round: n, contentSHA256: s, standardisation: $0) } } }
                    return PlanRun(planHash: try r.field("plan_hash"), planYAML: try r.field("plan_yaml"), submitter: try r.field("submitter"),
                                   state: PlanRun.State(rawValue: try r.field("state")) ?? .failed, reason: try r.field("reason"), checkpoint: checkpoint,
                                   submittedAt: Date(timeIntervalSince1970: try r.field("submitted_at")), updatedAt: Date(timeIntervalSince1970: try r.field("updated_at")))
                }
            }
        }
    }

    public func claimLease(_ name: String, holder: String, duration: TimeInterval, now: Date, renewing: Int?) async throws -> BrokerLease? {
        try await wrap {
            try await pool.write { db in
                let current = try Self.lease(db, name)
                guard let next = BrokerLease.claim(current: current, holder: holder, now: now, duration: duration, renewing: renewing) else { return nil }
                try db.execute(sql: """
                    INSERT INTO broker_lease (name, holder, term, expires_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, term = excluded.term, expires_at = excluded.expires_at
                    """, arguments: [name, next.holder, next.term, next.expiresAt.timeIntervalSince1970])
                if next.term != current?.term {
                    try Self.append(db, actor: holder, subject: name, event: .leaseTaken(.init(next)), at: now)
                }
                return next
            }
        }
    }

    public func releaseLease(_ name: String, holder: String, now: Date) async throws {
        try await wrap {
            try await pool.write { db in
                try db.execute(sql: "UPDATE broker_lease SET expires_at = ? WHERE name = ? AND holder = ?",
                               arguments: [now.timeIntervalSince1970, name, holder])
            }
        }
    }

    private static func lease(_ db: Database, _ name: String) throws -> BrokerLease? {
        try Row.fetchOne(db, sql: "SELECT holder, term, expires_at FROM broker_lease WHERE name = ?", arguments: [name]).map {
            BrokerLease(holder: $0["holder"], term: $0["term"], expiresAt: Date(timeIntervalSince1970: $0["expires_at"]))
        }
    }
}

extension Row {
    /// A column's value as `Value`, or a storage error naming the column: a row edited outside
    /// FedGate (text in a number column, say) is refused with a reason, never a crash.
    func field<Value: DatabaseValueConvertible>(_ column: String, as type: Value.Type = Value.self) throws -> Value {
        do { return try decode(Value.self, forColumn: column) } catch {
            let stored = self[column].map { "\($0)" } ?? "NULL"
            throw LedgerError.storage("column '\(column)' holds \(stored.prefix(64)), not a \(Value.self): the store was changed outside FedGate; restore it from a backup")
        }
    }
}
