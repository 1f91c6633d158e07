import FedGatePrivacy
import Foundation
import Logging
import PostgresNIO

/// The production ledger: PostgreSQL through PostgresNIO. A reservation locks its data set's row
/// (`SELECT … FOR UPDATE`) so concurrent reservations of the same data set queue, then checks the
/// caps and inserts in the same transaction; other data sets proceed in parallel.
public final class PostgresLedger: LedgerBackend, GovernanceBackend, RegistryBackend {
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger

    /// Connects to `postgres://user[:password]@host[:port]/database` (TLS off: for loopback and tests;
    /// the deployment guide covers TLS).
    public init(url: String, logger: Logger = Logger(label: "fedgate.store.postgres")) throws {
        guard let u = URLComponents(string: url), u.scheme == "postgres" || u.scheme == "postgresql",
              let host = u.host, let user = u.user else {
            throw LedgerError.storage("'\(url)' is not a postgres://user@host:port/database URL")
        }
        let database = String(u.path.dropFirst())
        let config = PostgresClient.Configuration(host: host, port: u.port ?? 5432, username: user, password: u.password,
                                                  database: database.isEmpty ? nil : database, tls: .disable)
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        runner = Task { await client.run() }
    }

    deinit { runner.cancel() }

    /// Stops the connection pool.
    public func shutdown() { runner.cancel() }

    public func applyMigrations(_ migrations: [Migration]) async throws -> [String] {
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                // One migrator at a time across processes.
                try await AdvisoryLock.migrations.take(conn, logger: logger)
                try await conn.query("""
                    CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    checksum TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)
                    """, logger: logger)
                var applied: [Int: String] = [:]
                for try await (version, checksum) in try await conn.query("SELECT version, checksum FROM schema_migrations", logger: logger)
                    .decode((Int, String).self) { applied[version] = checksum }
                let todo = try Migration.pending(migrations, applied: applied)
                for m in todo {
                    for statement in m.statements { try await conn.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                    try await conn.query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (\(m.version), \(m.name), \(m.checksum), \(Date().timeIntervalSince1970))", logger: logger)
                }
                return todo.map(\.name)
            }
        }
    }

    public func save(_ b: DatasetBudget, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { conn in
            try await conn.query("""
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap)
                VALUES (\(b.name), \(b.delta), \(b.perPlanCap), \(b.windowDays), \(b.windowCap), \(b.lifetimeCap))
                ON CONFLICT (name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """, logger: logger)
            return (b.name, .budgetSet(.init(b)))
        }
    }

    public func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws {
        let json = try entry.event.canonicalJSON()
        try await audited(actor: actor, at: now) { conn in
            var budget: DatasetBudget?
            for try await (name, delta, perPlan, days, windowCap, lifetime) in try await conn.query(
                "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets WHERE name = \(entry.dataset) FOR UPDATE",
                logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                budget = DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime)
            }
            guard let budget else { throw LedgerError.unknownDataset(entry.dataset) }
            let active = try await Self.entries(conn, dataset: entry.dataset, logger: logger).filter { $0.state != .released }
            try BudgetCheck.check(budget, active: active, adding: entry, now: now)
            try await conn.query("""
                INSERT INTO ledger_entries (id, dataset, plan_hash, round, event, state, created_at, settled_at)
                VALUES (\(entry.id), \(entry.dataset), \(entry.planHash), \(entry.round), \(json), 'reserved', \(entry.createdAt.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (entry.dataset, .budgetReserved(.init(id: entry.id, dataset: entry.dataset, plan: entry.planHash, round: entry.round, event: json)))
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var current: String?, dataset = ""
            for try await (s, d) in try await conn.query("SELECT state, dataset FROM ledger_entries WHERE id = \(id) FOR UPDATE", logger: logger).decode((String, String).self) {
                current = s
                dataset = d
            }
            guard let current else { throw LedgerError.unknownReservation(id) }
            guard current == LedgerState.reserved.rawValue else {
                throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
            }
            guard state != .reserved else { throw LedgerError.notASettlement(id: id) }
            try await conn.query("UPDATE ledger_entries SET state = \(state.rawValue), settled_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (dataset, .budgetSettled(.init(id: id, state: state)))
        }
    }

    public func auditTail() async throws -> (seq: Int, hash: String)? {
        try await wrap {
            var tail: (seq: Int, hash: String)?
            for try await (seq, hash) in try await client.query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1", logger: logger)
                .decode((Int, String).self) { tail = (seq, hash) }
            return tail
        }
    }

    public func record(_ h: AuditHead) async throws {
        try await wrap {
            try await client.query("""
                INSERT INTO audit_heads (signer, seq, hash, at, certificate, signature)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at.timeIntervalSince1970), \(h.certificate), \(h.signature))
                ON CONFLICT (signer, seq) DO NOTHING
                """, logger: logger)
        }
    }

    public func auditHeads() async throws -> [AuditHead] {
        try await wrap {
            try await heads("SELECT signer, seq, hash, at, certificate, signature FROM audit_heads ORDER BY at, signer, seq")
        }
    }

    public func witness(_ h: AuditHead, receivedAt: Date) async throws {
        try await wrap {
            try await client.query("""
                INSERT INTO audit_witnessed (signer, seq, hash, at, certificate, signature, received_at)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at.timeIntervalSince1970), \(h.certificate), \(h.signature), \(receivedAt.timeIntervalSince1970))
                ON CONFLICT (signer, seq) DO NOTHING
                """, logger: logger)
        }
    }

    public func witnessedHeads(signer: String?) async throws -> [AuditHead] {
        try await wrap {
            let query: PostgresQuery = signer.map {
                "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed WHERE signer = \($0) ORDER BY at, seq"
            } ?? "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed ORDER BY at, signer, seq"
            return try await heads(query)
        }
    }

    /// Signed heads selected as (signer, seq, hash, at, certificate, signature).
    private func heads(_ query: PostgresQuery) async throws -> [AuditHead] {
        var out: [AuditHead] = []
        for try await (signer, seq, hash, at, certificate, signature) in try await client.query(query, logger: logger)
            .decode((String, Int, String, Double, String, String).self) {
            out.append(AuditHead(signer: signer, seq: seq, hash: hash, at: Date(timeIntervalSince1970: at), certificate: certificate, signature: signature))
        }
        return out
    }

    public func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry]) {
        try await wrap {
            try await client.withConnection { conn in
                var budgets: [DatasetBudget] = []
                for try await (name, delta, perPlan, days, windowCap, lifetime) in try await conn.query(
                    "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets ORDER BY name",
                    logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                    budgets.append(DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime))
                }
                return (budgets, try await Self.entries(conn, dataset: nil, logger: logger))
            }
        }
    }

    public func budget(_ dataset: String) async throws -> DatasetBudget? {
        try await wrap {
            var budget: DatasetBudget?
            for try await (name, delta, perPlan, days, windowCap, lifetime) in try await client.query(
                "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets WHERE name = \(dataset)",
                logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                budget = DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime)
            }
            return budget
        }
    }

    public func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { _ in (subject, event) }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await wrap {
            var out: [AuditRecord] = []
            for try await (seq, at, actor, action, subject, payload, prev, hash) in try await client.query(
                "SELECT seq, at, actor, action, subject, payload, previous_hash, hash FROM audit_records ORDER BY seq", logger: logger)
                .decode((Int, Double, String, String, String, String, String, String).self) {
                out.append(AuditRecord(seq: seq, at: Date(timeIntervalSince1970: at), actor: actor, action: action, subject: subject,
                                       payload: payload, previousHash: prev, hash: hash))
            }
            return out
        }
    }

    public func addConsent(_ c: ConsentRecord, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { conn in
            try await conn.query("""
                INSERT INTO consents (id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at)
                VALUES (\(c.id), \(c.dataset), \(c.purpose), \(c.legalBasis), \(c.scope), \(c.validFrom.timeIntervalSince1970), \(c.validUntil?.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (c.dataset, .consentAdded(.init(c)))
        }
    }

    public func withdrawConsent(id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var dataset: String?
            for try await d in try await conn.query("SELECT dataset FROM consents WHERE id = \(id) AND withdrawn_at IS NULL FOR UPDATE", logger: logger).decode(String.self) {
                dataset = d
            }
            guard let dataset else { throw LedgerError.storage("no active consent '\(id)' to withdraw") }
            try await conn.query("UPDATE consents SET withdrawn_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (dataset, .consentWithdrawn(.init(id: id)))
        }
    }

    public func consents(dataset: String) async throws -> [ConsentRecord] {
        try await wrap {
            var out: [ConsentRecord] = []
            for try await (id, ds, purpose, basis, scope, from, until, withdrawn) in try await client.query(
                "SELECT id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at FROM consents WHERE dataset = \(dataset) ORDER BY valid_from, id",
                logger: logger).decode((String, String, String, String, String, Double, Double?, Double?).self) {
                out.append(ConsentRecord(id: id, dataset: ds, purpose: purpose, legalBasis: basis, scope: scope,
                                         validFrom: Date(timeIntervalSince1970: from), validUntil: until.map(Date.init(timeIntervalSince1970:)),
                                         withdrawnAt: withdrawn.map(Date.init(timeIntervalSince1970:))))
            }
            return out
        }
    }

    /// Appends the next audit record inside the caller's transaction; a transaction-scoped advisory
    /// lock serialises appends across connections and processes, so the chain cannot fork.
    private static func append(_ conn: PostgresConnection, actor: String, subject: String, event: AuditEvent, at: Date, logger: Logger) async throws {
        try await AdvisoryLock.auditChain.take(conn, logger: logger)
        var last: (seq: Int, hash: String)?
        for try await (seq, hash) in try await conn.query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1", logger: logger).decode((Int, String).self) {
            last = (seq, hash)
        }
        let r = AuditRecord.next(after: last, at: at, actor: actor, action: event.action, subject: subject, payload: event.payload)
        try await conn.query("""
            INSERT INTO audit_records (seq, at, actor, action, subject, payload, previous_hash, hash)
            VALUES (\(r.seq), \(r.at.timeIntervalSince1970), \(r.actor), \(r.action), \(r.subject), \(r.payload), \(r.previousHash), \(r.hash))
            """, logger: logger)
    }

    public func record(_ d: RecordedDecision, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { conn in
            let t = at.timeIntervalSince1970
            try await conn.query("INSERT INTO policy_versions (hash, silo, content, recorded_at) VALUES (\(d.policyHash), \(d.silo), \(d.policyContent), \(t)) ON CONFLICT (hash) DO NOTHING", logger: logger)
            try await conn.query("INSERT INTO plans (hash, content, recorded_at) VALUES (\(d.planHash), \(d.planContent), \(t)) ON CONFLICT (hash) DO NOTHING", logger: logger)
            if d.outcome == "needs_approval", let hours = d.approvalValidHours {
                try await conn.query("""
                    INSERT INTO approvals (plan_hash, silo, policy_hash, state, requested_at, valid_hours)
                    VALUES (\(d.planHash), \(d.silo), \(d.policyHash), 'pending', \(t), \(hours)) ON CONFLICT (plan_hash, silo) DO NOTHING
                    """, logger: logger)
            }
            return (d.planHash, .policyDecision(d.auditEvent))
        }
    }

    public func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { conn in
            var state: String?
            for try await s in try await conn.query("SELECT state FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo) FOR UPDATE", logger: logger).decode(String.self) {
                state = s
            }
            guard let state else { throw LedgerError.storage("no approval request for plan \(planHash) at silo '\(silo)'") }
            guard state == "pending" else { throw LedgerError.storage("plan \(planHash) was already \(state) at silo '\(silo)'") }
            let newState = approve ? "approved" : "rejected"
            try await conn.query("UPDATE approvals SET state = \(newState), decided_by = \(actor), decided_at = \(at.timeIntervalSince1970) WHERE plan_hash = \(planHash) AND silo = \(silo)", logger: logger)
            return (planHash, .planApproval(approved: approve, .init(plan: planHash, silo: silo)))
        }
    }

    public func approval(planHash: String, silo: String) async throws -> Approval? {
        try await wrap {
            var out: Approval?
            for try await (plan, s, policy, state, requested, hours, by, decided) in try await client.query(
                "SELECT plan_hash, silo, policy_hash, state, requested_at, valid_hours, decided_by, decided_at FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo)",
                logger: logger).decode((String, String, String, String, Double, Int, String?, Double?).self) {
                out = Approval(planHash: plan, silo: s, policyHash: policy, state: Approval.State(rawValue: state) ?? .rejected,
                               requestedAt: Date(timeIntervalSince1970: requested), validHours: hours, decidedBy: by,
                               decidedAt: decided.map(Date.init(timeIntervalSince1970:)))
            }
            return out
        }
    }

    public func enroll(_ p: Party, actor: String) async throws {
        try await audited(actor: actor, at: p.enrolledAt) { conn in
            try await Self.upsert(conn, p, logger: logger)
            return (p.id, .partyEnrolled(.init(p)))
        }
    }

    /// Enrols or re-enrols a party (a re-enrolled party is no longer revoked).
    private static func upsert(_ conn: PostgresConnection, _ p: Party, logger: Logger) async throws {
        try await conn.query("""
            INSERT INTO parties (id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at)
            VALUES (\(p.id), \(p.kind.rawValue), \(p.region), \(p.jurisdiction), \(p.certificateSHA256), \(p.enrolledAt.timeIntervalSince1970), NULL)
            ON CONFLICT (id) DO UPDATE SET region = excluded.region, jurisdiction = excluded.jurisdiction,
            certificate_sha256 = excluded.certificate_sha256, enrolled_at = excluded.enrolled_at, revoked_at = NULL
            """, logger: logger)
    }

    public func revoke(party id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var found = false
            for try await _ in try await conn.query("SELECT id FROM parties WHERE id = \(id) AND revoked_at IS NULL FOR UPDATE", logger: logger).decode(String.self) {
                found = true
            }
            guard found else { throw LedgerError.storage("no enrolled party '\(id)' to revoke") }
            try await conn.query("UPDATE parties SET revoked_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (id, .partyRevoked)
        }
    }

    public func revoke(_ r: Revocation, actor: String) async throws {
        try await audited(actor: actor, at: r.revokedAt) { conn in
            try await conn.query("""
                INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (\(r.kind.rawValue), \(r.value), \(r.reason), \(r.revokedAt.timeIntervalSince1970))
                ON CONFLICT (kind, value) DO NOTHING
                """, logger: logger)
            if r.kind == .identity {
                try await conn.query("UPDATE parties SET revoked_at = \(r.revokedAt.timeIntervalSince1970) WHERE id = \(r.value) AND revoked_at IS NULL", logger: logger)
            }
            return (r.value, .revoked(.init(kind: r.kind.rawValue, value: r.value, reason: r.reason)))
        }
    }

    public func revocations() async throws -> RevocationList {
        try await wrap {
            var list = RevocationList()
            for try await id in try await client.query("SELECT id FROM parties WHERE revoked_at IS NOT NULL", logger: logger).decode(String.self) {
                list.identities.insert(id)
            }
            for try await (kind, value) in try await client.query("SELECT kind, value FROM revocations", logger: logger).decode((String, String).self) {
                if let k = Revocation.Kind(rawValue: kind) { list.add(k, value) }
            }
            return list
        }
    }

    public func party(_ id: String) async throws -> Party? {
        try await wrap {
            var out: Party?
            for try await (pid, kind, region, jurisdiction, cert, enrolled, revoked) in try await client.query(
                "SELECT id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at FROM parties WHERE id = \(id)", logger: logger)
                .decode((String, String, String, String, String, Double, Double?).self) {
                out = Party(id: pid, kind: Party.Kind(rawValue: kind) ?? .silo, region: region, jurisdiction: jurisdiction, certificateSHA256: cert,
                            enrolledAt: Date(timeIntervalSince1970: enrolled), revokedAt: revoked.map(Date.init(timeIntervalSince1970:)))
            }
            return out
        }
    }

    public func invite(_ i: EnrolmentInvitation, actor: String) async throws {
        try await audited(actor: actor, at: i.createdAt) { conn in
            try await conn.query("""
                INSERT INTO enrolment_invitations (token_sha256, silo, region, jurisdiction, created_at, expires_at, used_at)
                VALUES (\(i.tokenSHA256), \(i.silo), \(i.region), \(i.jurisdiction), \(i.createdAt.timeIntervalSince1970), \(i.expiresAt.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (i.silo, .enrolmentInvited(.init(region: i.region, jurisdiction: i.jurisdiction, expiresAt: i.expiresAt.timeIntervalSince1970)))
        }
    }

    public func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation? {
        try await wrap { try await client.withConnection { conn in try await Self.invitation(conn, tokenSHA256, lock: false, logger: logger) } }
    }

    private static func invitation(_ conn: PostgresConnection, _ hash: String, lock: Bool, logger: Logger) async throws -> EnrolmentInvitation? {
        var out: EnrolmentInvitation?
        let query: PostgresQuery = lock
            ? "SELECT silo, region, jurisdiction, token_sha256, created_at, expires_at, used_at FROM enrolment_invitations WHERE token_sha256 = \(hash) FOR UPDATE"
            : "SELECT silo, region, jurisdiction, token_sha256, created_at, expires_at, used_at FROM enrolment_invitations WHERE token_sha256 = \(hash)"
        for try await (silo, region, jurisdiction, token, created, expires, used) in try await conn.query(query, logger: logger)
            .decode((String, String, String, String, Double, Double, Double?).self) {
            out = EnrolmentInvitation(silo: silo, region: region, jurisdiction: jurisdiction, tokenSHA256: token,
                                      createdAt: Date(timeIntervalSince1970: created), expiresAt: Date(timeIntervalSince1970: expires),
                                      usedAt: used.map(Date.init(timeIntervalSince1970:)))
        }
        return out
    }

    public func redeem(tokenSHA256: String, enrolling p: Party, at: Date) async throws {
        try await audited(actor: p.id, at: at) { conn in
            guard let invitation = try await Self.invitation(conn, tokenSHA256, lock: true, logger: logger) else {
                throw LedgerError.storage("unknown enrolment token")
            }
            if let refusal = invitation.refusal(for: p.id, region: p.region, at: at) { throw LedgerError.storage(refusal) }
            try await conn.query("UPDATE enrolment_invitations SET used_at = \(at.timeIntervalSince1970) WHERE token_sha256 = \(tokenSHA256)",
                                 logger: logger)
            let enrolled = invitation.party(p, at: at)
            try await Self.upsert(conn, enrolled, logger: logger)
            return (p.id, .enrolmentRedeemed(.init(enrolled)))
        }
    }

    public func openRound(_ r: RoundRecord, actor: String) async throws {
        try await audited(actor: actor, at: r.updatedAt) { conn in
            try await conn.query("""
                INSERT INTO rounds (plan_hash, number, state, sampled, survivors, deadline, updated_at)
                VALUES (\(r.planHash), \(r.number), 'planned', \(RegistryJSON.encode(r.sampled)), \(RegistryJSON.encode(r.survivors)),
                \(r.deadline.timeIntervalSince1970), \(r.updatedAt.timeIntervalSince1970))
                """, logger: logger)
            return (r.planHash, .roundPlanned(.init(round: r.number, sampled: r.sampled)))
        }
    }

    public func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var current: String?
            for try await s in try await conn.query("SELECT state FROM rounds WHERE plan_hash = \(planHash) AND number = \(number) FOR UPDATE", logger: logger).decode(String.self) {
                current = s
            }
            try RegistryJSON.transition(from: current, to: state, planHash: planHash, number: number)
            try await conn.query("""
                UPDATE rounds SET state = \(state.rawValue), survivors = \(RegistryJSON.encode(survivors)), updated_at = \(at.timeIntervalSince1970)
                WHERE plan_hash = \(planHash) AND number = \(number)
                """, logger: logger)
            return (planHash, .roundAdvanced(state, .init(round: number, survivors: survivors, checkpointSHA256: nil)))
        }
    }

    public func rounds(planHash: String) async throws -> [RoundRecord] {
        try await wrap {
            var out: [RoundRecord] = []
            for try await (plan, number, state, sampled, survivors, deadline, updated) in try await client.query(
                "SELECT plan_hash, number, state, sampled, survivors, deadline, updated_at FROM rounds WHERE plan_hash = \(planHash) ORDER BY number",
                logger: logger).decode((String, Int, String, String, String, Double, Double).self) {
                out.append(RoundRecord(planHash: plan, number: number, state: RoundRecord.State(rawValue: state) ?? .aborted,
                                       sampled: RegistryJSON.strings(sampled), survivors: RegistryJSON.strings(survivors),
                                       deadline: Date(timeIntervalSince1970: deadline), updatedAt: Date(timeIntervalSince1970: updated)))
            }
            return out
        }
    }

    public func addModelVersion(_ m: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int {
        if let content { try ModelContent.check(content, m.contentSHA256) }
        let sha = m.contentSHA256.lowercased()
        return try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                // Serialise version numbering with the audit appends' lock.
                try await AdvisoryLock.modelVersions.take(conn, logger: logger)
                if let content {
                    try await conn.query("INSERT INTO model_content (content_sha256, bytes) VALUES (\(sha), \(ByteBuffer(bytes: content))) ON CONFLICT (content_sha256) DO NOTHING",
                                         logger: logger)
                } else {
                    var stored = 0
                    for try await n in try await conn.query("SELECT COUNT(*) FROM model_content WHERE content_sha256 = \(sha)", logger: logger).decode(Int.self) { stored = n }
                    guard stored > 0 else { throw LedgerError.storage("no model file with SHA-256 \(sha.prefix(12))… is stored; pass the file") }
                }
                var version = 1
                for try await v in try await conn.query("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions", logger: logger).decode(Int.self) { version = v }
                try await conn.query("""
                    INSERT INTO model_versions (version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at)
                    VALUES (\(version), \(m.planHash), \(m.round), \(sha), \(RegistryJSON.encode(m.participants)),
                    \(RegistryJSON.encode(m.epsilonPerSilo)), \(RegistryJSON.encode(m.metrics)), \(m.parent), \(m.createdAt.timeIntervalSince1970))
                    """, logger: logger)
                try await Self.append(conn, actor: actor, subject: m.planHash, event: .modelVersioned(.init(
                    version: version, round: m.round, contentSHA256: m.contentSHA256, epsilonPerSilo: m.epsilonPerSilo)),
                    at: m.createdAt, logger: logger)
                return version
            }
        }
    }

    public func modelVersions() async throws -> [ModelVersion] {
        try await wrap {
            var out: [ModelVersion] = []
            for try await (version, plan, round, content, participants, eps, metrics, parent, created) in try await client.query(
                "SELECT version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at FROM model_versions ORDER BY version",
                logger: logger).decode((Int, String, Int, String, String, String, String, Int?, Double).self) {
                out.append(ModelVersion(version: version, planHash: plan, round: round, contentSHA256: content,
                                        participants: RegistryJSON.strings(participants), epsilonPerSilo: RegistryJSON.numbers(eps),
                                        metrics: RegistryJSON.numbers(metrics), parent: parent, createdAt: Date(timeIntervalSince1970: created)))
            }
            return out
        }
    }

    public func modelContent(sha256: String) async throws -> [UInt8]? {
        try await wrap {
            var out: [UInt8]?
            for try await bytes in try await client.query("SELECT bytes FROM model_content WHERE content_sha256 = \(sha256.lowercased())",
                                                          logger: logger).decode(ByteBuffer.self) {
                out = Array(bytes.readableBytesView)
            }
            return out
        }
    }

    /// Tests only: a store in a new, empty database on the server at `url` (each test its own, so
    /// audit chains do not cross tests), not yet migrated.
    @_spi(Testing) public static func scratch(on url: String, prefix: String) async throws -> PostgresLedger {
        try PostgresLedger(url: try await scratchURL(on: url, prefix: prefix))
    }

    /// Tests only: the URL of a new, empty database on the server at `url` (for processes to open).
    @_spi(Testing) public static func scratchURL(on url: String, prefix: String) async throws -> String {
        let name = prefix + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
        let admin = try PostgresLedger(url: url)
        try await admin.executeForTesting("CREATE DATABASE \(name)")
        admin.shutdown()
        guard var parts = URLComponents(string: url) else { throw LedgerError.storage("'\(url)' is not a postgres:// URL") }
        parts.path = "/" + name
        return parts.string ?? url
    }

    /// Runs raw SQL: for tests that tamper with the store behind the ledger's back.
    func executeForTesting(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await wrap { try await client.withConnection { conn in try await Self.entries(conn, dataset: dataset, logger: logger) } }
    }

    /// One data set's entries, or every entry (`dataset` nil).
    private static func entries(_ conn: PostgresConnection, dataset: String?, logger: Logger) async throws -> [LedgerEntry] {
        var out: [LedgerEntry] = []
        let query: PostgresQuery = dataset.map {
            "SELECT id, dataset, plan_hash, round, event, state, created_at, settled_at FROM ledger_entries WHERE dataset = \($0) ORDER BY created_at, id"
        } ?? "SELECT id, dataset, plan_hash, round, event, state, created_at, settled_at FROM ledger_entries ORDER BY created_at, id"
        let rows = try await conn.query(query, logger: logger)
        for try await (id, ds, plan, round, event, state, created, settled) in rows.decode((String, String, String, Int, String, String, Double, Double?).self) {
            out.append(LedgerEntry(id: id, dataset: ds, planHash: plan, round: round, event: try DPEvent.fromJSON(event),
                                   state: try LedgerState(stored: state), createdAt: Date(timeIntervalSince1970: created),
                                   settledAt: settled.map(Date.init(timeIntervalSince1970:))))
        }
        return out
    }

    /// Runs `change` and appends its audit record in one transaction: either both land or neither.
    /// `change` returns the record's subject and event.
    private func audited(actor: String, at: Date,
                         _ change: (PostgresConnection) async throws -> (subject: String, event: AuditEvent)) async throws {
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                let (subject, event) = try await change(conn)
                try await Self.append(conn, actor: actor, subject: subject, event: event, at: at, logger: logger)
            }
        }
    }

    /// A connection that failed or was lost, or a server shutting down (SQLSTATE classes 08, 57).
    static func isUnavailable(_ error: any Error) -> Bool {
        guard let e = error as? PSQLError else { return false }
        switch e.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown: return true
        case .server:
            let state = e.serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("08") || state.hasPrefix("57")
        default: return false
        }
    }

    @discardableResult
    private func wrap<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as LedgerError { throw e } catch let e as PostgresTransactionError {
            if let inner = e.closureError as? LedgerError { throw inner }
            let parts: [(any Error)?] = [e.beginError, e.closureError, e.commitError, e.rollbackError]
            if let lost = parts.compactMap({ $0 }).first(where: Self.isUnavailable) { throw LedgerError.unavailable(String(describing: lost)) }
            throw LedgerError.storage(String(reflecting: e))
        } catch let e where Self.isUnavailable(e) {
            throw LedgerError.unavailable(String(describing: e))
        } catch let e as PrivacyError {
            throw LedgerError.storage("a stored DP event is invalid: \(e)")
        } catch { throw LedgerError.storage(String(reflecting: error)) }
    }
}

extension PostgresLedger: PlanRunBackend {
    public func startPlanRun(_ run: PlanRun, submission: AuditEvent.PlanSubmission, actor: String) async throws {
        try await audited(actor: actor, at: run.submittedAt) { conn in
            var state: String?
            for try await s in try await conn.query("SELECT state FROM plan_runs WHERE plan_hash = \(run.planHash) FOR UPDATE", logger: logger)
                .decode(String.self) { state = s }
            if state == "running" { throw LedgerError.storage("plan \(run.planHash.prefix(12))… is already running") }
            let t = run.submittedAt.timeIntervalSince1970
            try await conn.query("""
                INSERT INTO plan_runs (plan_hash, plan_yaml, submitter, state, reason, checkpoint_round, checkpoint_sha256, standardisation, submitted_at, updated_at)
                VALUES (\(run.planHash), \(run.planYAML), \(run.submitter), 'running', NULL, NULL, NULL, NULL, \(t), \(t))
                ON CONFLICT (plan_hash) DO UPDATE SET plan_yaml = excluded.plan_yaml, submitter = excluded.submitter, state = 'running',
                reason = NULL, checkpoint_round = NULL, checkpoint_sha256 = NULL, standardisation = NULL,
                submitted_at = excluded.submitted_at, updated_at = excluded.updated_at
                """, logger: logger)
            return (run.planHash, .planSubmitted(submission))
        }
    }

    public func commitRound(planHash: String, number: Int, survivors: [String], checkpoint: PlanRun.Checkpoint, content: [UInt8],
                            fence: LeaseFence?, at: Date, actor: String) async throws {
        try ModelContent.check(content, checkpoint.contentSHA256)
        let sha = checkpoint.contentSHA256.lowercased()
        try await audited(actor: actor, at: at) { conn in
            if let fence { try fence.check(try await Self.lease(conn, fence.name, logger: logger)) }
            var current: String?
            for try await s in try await conn.query("SELECT state FROM rounds WHERE plan_hash = \(planHash) AND number = \(number) FOR UPDATE", logger: logger)
                .decode(String.self) { current = s }
            try RegistryJSON.transition(from: current, to: .committed, planHash: planHash, number: number)
            try await conn.query("""
                UPDATE rounds SET state = 'committed', survivors = \(RegistryJSON.encode(survivors)), updated_at = \(at.timeIntervalSince1970)
                WHERE plan_hash = \(planHash) AND number = \(number)
                """, logger: logger)
            var previous: String?
            for try await p in try await conn.query("SELECT checkpoint_sha256 FROM plan_runs WHERE plan_hash = \(planHash) FOR UPDATE", logger: logger)
                .decode(String?.self) { previous = p }
            try await conn.query("INSERT INTO model_content (content_sha256, bytes) VALUES (\(sha), \(ByteBuffer(bytes: content))) ON CONFLICT (content_sha256) DO NOTHING",
                                 logger: logger)
            var updated = 0
            for try await n in try await conn.query("""
                UPDATE plan_runs SET checkpoint_round = \(checkpoint.round), checkpoint_sha256 = \(sha), standardisation = \(checkpoint.standardisation),
                updated_at = \(at.timeIntervalSince1970) WHERE plan_hash = \(planHash) AND state = 'running' RETURNING 1
                """, logger: logger).decode(Int.self) { updated += n }
            guard updated == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here; round \(number) not committed") }
            // The checkpoint it replaces goes, unless a version or another plan still points to it.
            if let previous, previous != sha {
                try await conn.query("""
                    DELETE FROM model_content WHERE content_sha256 = \(previous)
                    AND NOT EXISTS (SELECT 1 FROM model_versions WHERE content_sha256 = \(previous))
                    AND NOT EXISTS (SELECT 1 FROM plan_runs WHERE checkpoint_sha256 = \(previous))
                    """, logger: logger)
            }
            return (planHash, .roundAdvanced(.committed, .init(round: number, survivors: survivors, checkpointSHA256: sha)))
        }
    }

    public func finishPlanRun(planHash: String, state: PlanRun.State, reason: String?, fence: LeaseFence?, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            if let fence { try fence.check(try await Self.lease(conn, fence.name, logger: logger)) }
            var updated = 0
            for try await n in try await conn.query("""
                UPDATE plan_runs SET state = \(state.rawValue), reason = \(reason), updated_at = \(at.timeIntervalSince1970)
                WHERE plan_hash = \(planHash) AND state = 'running' RETURNING 1
                """, logger: logger).decode(Int.self) { updated += n }
            guard updated == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here") }
            return (planHash, .planEnded(state, .init(reason: reason)))
        }
    }

    public func planRuns() async throws -> [PlanRun] {
        try await wrap {
            var out: [PlanRun] = []
            for try await (hash, yaml, submitter, state, reason, round, sha, std, submitted, updated) in try await client.query("""
                SELECT plan_hash, plan_yaml, submitter, state, reason, checkpoint_round, checkpoint_sha256, standardisation, submitted_at, updated_at
                FROM plan_runs ORDER BY submitted_at, plan_hash
                """, logger: logger).decode((String, String, String, String, String?, Int?, String?, String?, Double, Double).self) {
                let checkpoint = round.flatMap { n in sha.flatMap { s in std.map { PlanRun.Checkpoint(round: n, contentSHA256: s, standardisation: $0) } } }
                out.append(PlanRun(planHash: hash, planYAML: yaml, submitter: submitter, state: PlanRun.State(rawValue: state) ?? .failed,
                                   reason: reason, checkpoint: checkpoint, submittedAt: Date(timeIntervalSince1970: submitted),
                                   updatedAt: Date(timeIntervalSince1970: updated)))
            }
            return out
        }
    }

    public func claimLease(_ name: String, holder: String, duration: TimeInterval, now: Date, renewing: Int?) async throws -> BrokerLease? {
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                // Claims of any lease queue here, so two brokers never both see it free.
                try await AdvisoryLock.leases.take(conn, logger: logger)
                let current = try await Self.lease(conn, name, logger: logger)
                guard let next = BrokerLease.claim(current: current, holder: holder, now: now, duration: duration, renewing: renewing) else { return nil }
                try await conn.query("""
                    INSERT INTO broker_lease (name, holder, term, expires_at) VALUES (\(name), \(next.holder), \(next.term), \(next.expiresAt.timeIntervalSince1970))
                    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, term = excluded.term, expires_at = excluded.expires_at
                    """, logger: logger)
                if next.term != current?.term {
                    try await Self.append(conn, actor: holder, subject: name, event: .leaseTaken(.init(next)),
                                          at: now, logger: logger)
                }
                return next
            }
        }
    }

    public func releaseLease(_ name: String, holder: String, now: Date) async throws {
        try await wrap {
            try await client.query("UPDATE broker_lease SET expires_at = \(now.timeIntervalSince1970) WHERE name = \(name) AND holder = \(holder)",
                                   logger: logger)
        }
    }

    private static func lease(_ conn: PostgresConnection, _ name: String, logger: Logger) async throws -> BrokerLease? {
        var out: BrokerLease?
        for try await (holder, term, expires) in try await conn.query(
            "SELECT holder, term, expires_at FROM broker_lease WHERE name = \(name) FOR UPDATE", logger: logger).decode((String, Int, Double).self) {
            out = BrokerLease(holder: holder, term: term, expiresAt: Date(timeIntervalSince1970: expires))
        }
        return out
    }
}

/// The transaction-scoped advisory locks that serialise writers across connections and processes,
/// by name: each id is taken for one purpose only.
enum AdvisoryLock: Int64 {
    /// One migrator at a time.
    case migrations = 7411
    /// Audit appends, so the chain cannot fork.
    case auditChain = 7412
    /// Model version numbering.
    case modelVersions = 7413
    /// Lease claims, so two brokers never both see a lease free.
    case leases = 7415

    func take(_ conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_xact_lock(\(rawValue))"), logger: logger)
    }
}
