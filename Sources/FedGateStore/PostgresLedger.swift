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

    /// Connects to `postgres://user@host[:port]/database`, with TLS when the URL's `sslmode` asks
    /// (`PostgresURL`: verify-full or verify-ca against `sslrootcert`; the password from `password_file`).
    public init(url: String, logger: Logger = Logger(label: "fedgate.store.postgres")) throws {
        let parsed: PostgresURL
        do { parsed = try PostgresURL(url) } catch let problem as PostgresURL.Problem { throw LedgerError.storage(problem.description) }
        var config = parsed.configuration
        // Names FedGate's sessions, so that a broker fencing a frozen one ends only FedGate's.
        config.options.additionalStartupParameters = [("application_name", Self.applicationName)]
        // The pool's own logger, but for one warning that says only that the first statement came
        // before the pool's task started (it waits for it): at every command's start it alarmed operators.
        var background = logger
        background.handler = StartupQuietHandler(wrapping: logger.handler)
        let client = PostgresClient(configuration: config, backgroundLogger: background)
        self.client = client
        self.logger = logger
        runner = Task { await client.run() }
    }

    /// The `application_name` of every FedGate session (`pg_stat_activity`).
    static let applicationName = "fedgate"

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

    /// A connection that failed or was lost, or a server shutting down (SQLSTATE classes 08, 57).
    static func isUnavailable(_ error: any Error) -> Bool {
        guard let e = error as? PSQLError else { return false }
        switch e.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown: return true
        case .server:
            // 08: connection, 57: operator intervention (shutdown, session ended); 55P03: a
            // bounded lock wait ran out (`limitLockWaits`). Nothing was written in any of them.
            let state = e.serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("08") || state.hasPrefix("57") || state == "55P03"
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

extension PostgresLedger: PlanRunBackend {}

/// Forwards every log record but PostgresNIO's notice that a connection was asked for before
/// `PostgresClient.run()` began, which it logs at warning level and then simply waits out; that one
/// is kept at debug level.
struct StartupQuietHandler: LogHandler {
    var wrapped: any LogHandler
    init(wrapping handler: any LogHandler) { wrapped = handler }

    var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }
    var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        if event.level == .warning, event.message.description.hasPrefix("Trying to lease connection from `PostgresClient`, but `PostgresClient.run()`") {
            guard logLevel <= .debug else { return }
            event.level = .debug
        }
        wrapped.log(event: event)
    }
}
