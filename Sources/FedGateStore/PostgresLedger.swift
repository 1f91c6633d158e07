import FedGatePrivacy
import Foundation
import Logging
import PostgresNIO

/// The production ledger: PostgreSQL through PostgresNIO. A reservation locks its data set's row
/// (`SELECT … FOR UPDATE`) so concurrent reservations of the same data set queue, then checks the
/// caps and inserts in the same transaction; other data sets proceed in parallel.
public final class PostgresLedger: LedgerBackend, GovernanceBackend, RegistryBackend {
    let client: PostgresClient
    let runner: Task<Void, Never>
    let logger: Logger

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

    /// Appends the next audit record inside the caller's transaction; a transaction-scoped advisory
    /// lock serialises appends across connections and processes, so the chain cannot fork.
    static func append(_ conn: PostgresConnection, actor: String, subject: String, event: AuditEvent, at: Date, logger: Logger) async throws {
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

    /// Runs `change` and appends its audit record in one transaction: either both land or neither.
    /// `change` returns the record's subject and event.
    func audited(actor: String, at: Date,
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
    func wrap<T>(_ body: () async throws -> T) async throws -> T {
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
