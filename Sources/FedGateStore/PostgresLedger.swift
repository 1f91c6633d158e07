import FedGatePrivacy
import Foundation
import Logging
import PostgresNIO

/// The production ledger: PostgreSQL through PostgresNIO. A reservation locks its data set's row
/// (`SELECT … FOR UPDATE`) so concurrent reservations of the same data set queue, then checks the
/// caps and inserts in the same transaction; other data sets proceed in parallel.
public final class PostgresLedger: LedgerBackend {
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
                try await conn.query("SELECT pg_advisory_xact_lock(7411)", logger: logger)
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

    public func save(_ b: DatasetBudget) async throws {
        try await wrap {
            try await client.query("""
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap)
                VALUES (\(b.name), \(b.delta), \(b.perPlanCap), \(b.windowDays), \(b.windowCap), \(b.lifetimeCap))
                ON CONFLICT (name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """, logger: logger)
        }
    }

    public func reserve(_ entry: LedgerEntry, now: Date) async throws {
        let json = try entry.event.canonicalJSON()
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in
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
            }
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date) async throws {
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                var current: String?
                for try await s in try await conn.query("SELECT state FROM ledger_entries WHERE id = \(id) FOR UPDATE", logger: logger).decode(String.self) {
                    current = s
                }
                guard let current else { throw LedgerError.unknownReservation(id) }
                guard current == LedgerState.reserved.rawValue else {
                    throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
                }
                try await conn.query("UPDATE ledger_entries SET state = \(state.rawValue), settled_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            }
        }
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await wrap { try await client.withConnection { conn in try await Self.entries(conn, dataset: dataset, logger: logger) } }
    }

    private static func entries(_ conn: PostgresConnection, dataset: String, logger: Logger) async throws -> [LedgerEntry] {
        var out: [LedgerEntry] = []
        let rows = try await conn.query("""
            SELECT id, dataset, plan_hash, round, event, state, created_at, settled_at FROM ledger_entries
            WHERE dataset = \(dataset) ORDER BY created_at, id
            """, logger: logger)
        for try await (id, ds, plan, round, event, state, created, settled) in rows.decode((String, String, String, Int, String, String, Double, Double?).self) {
            out.append(LedgerEntry(id: id, dataset: ds, planHash: plan, round: round, event: try DPEvent.fromJSON(event),
                                   state: LedgerState(rawValue: state) ?? .released, createdAt: Date(timeIntervalSince1970: created),
                                   settledAt: settled.map(Date.init(timeIntervalSince1970:))))
        }
        return out
    }

    @discardableResult
    private func wrap<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as LedgerError { throw e } catch let e as PostgresTransactionError {
            if let inner = e.closureError as? LedgerError { throw inner }
            throw LedgerError.storage(String(reflecting: e))
        } catch let e as PrivacyError {
            throw LedgerError.storage("a stored DP event is invalid: \(e)")
        } catch { throw LedgerError.storage(String(reflecting: error)) }
    }
}
