import Foundation
import GRDB
import Logging
import NIOCore
import PostgresNIO

// The two backends of the SQL store: how each binds values, reads rows, locks and runs a transaction.

// MARK: PostgreSQL

struct PostgresTransaction: SQLTransaction {
    let connection: PostgresConnection
    let logger: Logger

    func rows(_ statement: SQLStatement) async throws -> [SQLRow] {
        var out: [SQLRow] = []
        for try await row in try await connection.query(try Self.query(statement), logger: logger) {
            var columns: [String] = [], values: [SQLValue] = []
            for cell in row {
                columns.append(cell.columnName)
                values.append(try Self.value(of: cell))
            }
            out.append(SQLRow(columns: columns, values: values))
        }
        return out
    }

    func lock(_ lock: AdvisoryLock) async throws { try await lock.take(connection, logger: logger) }

    static func query(_ statement: SQLStatement) throws -> PostgresQuery {
        let (sql, values) = statement.render(.postgres)
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .null: bindings.appendNull()
            case .integer(let i): bindings.append(i)
            case .real(let d): bindings.append(d)
            case .text(let s): bindings.append(s)
            case .blob(let b): bindings.append(ByteBuffer(bytes: b))
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: bindings)
    }

    static func value(of cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
        case .float4, .float8: return .real(try cell.decode(Double.self))
        case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
        case .bytea:
            let buffer = try cell.decode(ByteBuffer.self)
            return .blob(Array(buffer.readableBytesView))
        default: return .text(try cell.decode(String.self))
        }
    }
}

extension PostgresLedger: SQLStore {
    func transaction<T: Sendable>(_ body: @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        try await wrap {
            try await client.withTransaction(logger: logger) { conn in try await body(PostgresTransaction(connection: conn, logger: logger)) }
        }
    }

    func reading<T: Sendable>(_ body: @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        try await wrap {
            try await client.withConnection { conn in try await body(PostgresTransaction(connection: conn, logger: logger)) }
        }
    }
}

extension AdvisoryLock {
    func take(_ conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_xact_lock(\(rawValue))"), logger: logger)
    }
}

// MARK: SQLite

/// Statements on SQLite's one writer connection (or, for reads, a reader) each run as one access
/// to GRDB's pool; `SQLiteLedger.transaction` holds the writer for the whole transaction.
struct SQLiteTransaction: SQLTransaction {
    let pool: DatabasePool
    let writing: Bool

    func rows(_ statement: SQLStatement) async throws -> [SQLRow] {
        let (sql, values) = statement.render(.sqlite)
        let arguments = Self.arguments(values)
        let fetch: @Sendable (Database) throws -> [SQLRow] = { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                SQLRow(columns: Array(row.columnNames), values: row.databaseValues.map(Self.value))
            }
        }
        return writing ? try await pool.writeWithoutTransaction(fetch) : try await pool.read(fetch)
    }

    func lock(_ lock: AdvisoryLock) async throws {}

    static func arguments(_ values: [SQLValue]) -> StatementArguments {
        StatementArguments(values.map { value -> DatabaseValue in
            switch value {
            case .null: .null
            case .integer(let i): i.databaseValue
            case .real(let d): d.databaseValue
            case .text(let s): s.databaseValue
            case .blob(let b): Data(b).databaseValue
            }
        })
    }

    static func value(_ v: DatabaseValue) -> SQLValue {
        switch v.storage {
        case .null: .null
        case .int64(let i): .integer(i)
        case .double(let d): .real(d)
        case .string(let s): .text(s)
        case .blob(let d): .blob(Array(d))
        }
    }
}

/// One SQLite write transaction at a time in this process: a transaction spans several accesses
/// to the pool's writer, and nothing else may write in between (other processes wait on the
/// database's own lock, taken by `BEGIN IMMEDIATE`).
actor WriterGate {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { waiting.append($0) }
        } else {
            busy = true
        }
        defer { handOn() }
        return try await body()
    }

    private func handOn() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}

extension SQLiteLedger: SQLStore {
    func transaction<T: Sendable>(_ body: @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        let pool = pool
        return try await wrap {
            try await gate.run {
                // Begun, committed and rolled back from tasks of their own: a cancelled caller must
                // never leave the writer inside a transaction.
                try await Task { try await pool.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") } }.value
                do {
                    let result = try await body(SQLiteTransaction(pool: pool, writing: true))
                    try await Task { try await pool.writeWithoutTransaction { db in try db.execute(sql: "COMMIT") } }.value
                    return result
                } catch {
                    await Task { try? await pool.writeWithoutTransaction { db in if db.isInsideTransaction { try db.execute(sql: "ROLLBACK") } } }.value
                    throw error
                }
            }
        }
    }

    func reading<T: Sendable>(_ body: @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        try await wrap { try await body(SQLiteTransaction(pool: pool, writing: false)) }
    }

    /// A write of the backend's own (GRDB's transaction), through the same gate as the SQL store's.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let pool = pool
        return try await gate.run { try await pool.write(updates) }
    }
}
