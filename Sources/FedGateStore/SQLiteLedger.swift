import FedGatePrivacy
import Foundation
import GRDB

/// The embedded ledger: SQLite through GRDB. GRDB serialises writes, so a reservation's cap check
/// and insert run in one transaction no other writer interleaves with.
public final class SQLiteLedger: LedgerBackend, GovernanceBackend, RegistryBackend {
    let pool: DatabasePool
    /// Serialises this process's write transactions (see `WriterGate`).
    let gate = WriterGate()

    /// Opens (or creates) the database file.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        // The SQL store's transactions span several accesses to the writer (`SQLBackends`).
        config.allowsUnsafeTransactions = true
        // A new store holds the silo's ledger and audit trail: readable by its owner only, like the
        // keys (SQLite gives its -wal and -shm files the database file's mode).
        if !path.hasPrefix(":"), !path.hasPrefix("file:"), !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        do { pool = try DatabasePool(path: path, configuration: config) } catch {
            throw LedgerError.storage("cannot open SQLite database \(path): \(error)")
        }
    }

    public func applyMigrations(_ migrations: [Migration]) async throws -> [String] {
        try await wrap {
            try await write { db in
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

    /// Runs raw SQL: for tests that tamper with the store behind the ledger's back.
    func executeForTesting(_ sql: String) async throws {
        try await write { db in try db.execute(sql: sql) }
    }

    /// Ledger errors pass through; database errors become `LedgerError.storage`.
    @discardableResult
    func wrap<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as LedgerError { throw e } catch let e as PrivacyError {
            throw LedgerError.storage("a stored DP event is invalid: \(e)")
        } catch { throw LedgerError.storage("\(error)") }
    }
}

extension SQLiteLedger: PlanRunBackend {}

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
