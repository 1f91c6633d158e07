import FedGatePrivacy
import Foundation
import GRDB

/// The embedded ledger: SQLite through GRDB. GRDB serialises writes, so a reservation's cap check
/// and insert run in one transaction no other writer interleaves with.
public final class SQLiteLedger: LedgerBackend, GovernanceBackend, RegistryBackend {
    let pool: DatabasePool

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

    /// Appends the next audit record inside the caller's write transaction (GRDB has one writer,
    /// so appends are serialised and the chain cannot fork).
    static func append(_ db: Database, actor: String, subject: String, event: AuditEvent, at: Date) throws {
        let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
        let r = AuditRecord.next(after: last.map { (seq: $0["seq"], hash: $0["hash"]) }, at: at, actor: actor,
                                 action: event.action, subject: subject, payload: event.payload)
        try db.execute(sql: "INSERT INTO audit_records (seq, at, actor, action, subject, payload, previous_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       arguments: [r.seq, r.at.timeIntervalSince1970, r.actor, r.action, r.subject, r.payload, r.previousHash, r.hash])
    }

    /// Runs raw SQL: for tests that tamper with the store behind the ledger's back.
    func executeForTesting(_ sql: String) async throws {
        try await pool.write { db in try db.execute(sql: sql) }
    }

    /// Runs `change` and appends its audit record in one write transaction: either both land or neither.
    /// `change` returns the record's subject and event.
    func audited(actor: String, at: Date,
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
    func wrap<T>(_ body: () async throws -> T) async throws -> T {
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
