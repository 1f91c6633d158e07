import Foundation
import GRDB
import Logging
import NIOCore
import PostgresNIO
import Synchronization

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

    func limitLockWaits(to seconds: TimeInterval) async throws {
        let milliseconds = max(1, Int((seconds * 1000).rounded()))
        for try await _ in try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL lock_timeout = \(milliseconds)"), logger: logger) {}
    }

    func endIdleTransactions(longerThan seconds: TimeInterval) async throws -> Int {
        do {
            return try await rows("""
                SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = \(PostgresLedger.applicationName)
                AND state IN ('idle in transaction', 'idle in transaction (aborted)')
                AND state_change < clock_timestamp() - make_interval(secs => \(seconds))
                """).count
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42501" {
            throw LedgerError.storage("""
                cannot end another FedGate session held inside a transaction (\(error.serverInfo?[.message] ?? "permission denied")): \
                run every broker as the same database role, or grant the role pg_signal_backend
                """)
        }
    }

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
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        let logger = logger
        return try await wrap {
            try await client.withConnection { conn in
                try await Self.whileOpen(conn) {
                    try await conn.withTransaction(logger: logger) { conn in try await body(PostgresTransaction(connection: conn, logger: logger)) }
                }
            }
        }
    }

    func reading<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        let logger = logger
        return try await wrap {
            try await client.withConnection { conn in
                try await Self.whileOpen(conn) { try await body(PostgresTransaction(connection: conn, logger: logger)) }
            }
        }
    }

    /// `work` on `connection`, ended as `unavailable` the moment the connection closes. PostgresNIO
    /// (1.33.2) never answers a statement written to a connection the server has already closed —
    /// a session ended between two statements of a transaction, by a successor fencing off a frozen
    /// broker (`endIdleTransactions`) or by the server going down — and that wait ignores
    /// cancellation: without this a caller would hang for ever. The abandoned statement's task is
    /// left waiting on the dead connection; nothing else is held.
    static func whileOpen<T: Sendable>(_ connection: PostgresConnection, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let call = OpenConnectionCall<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                call.start(continuation, work: work)
                connection.closeFuture.whenComplete { _ in
                    call.finish(.failure(LedgerError.unavailable(
                        "the database closed this session in the middle of the call (ended by the server, or by another broker fencing a frozen one); nothing of it was kept")))
                }
            }
        } onCancel: { call.cancel() }
    }
}

/// One call on a connection, finished once: by its work's result or by the connection closing.
private final class OpenConnectionCall<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var task: Task<Void, Never>?
        var cancelled = false
    }
    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<T, any Error>, work: @escaping @Sendable () async throws -> T) {
        // The continuation is in place before the work starts: work that ends at once finds it.
        state.withLock { $0.continuation = continuation }
        let task = Task {
            do { finish(.success(try await work())) } catch { finish(.failure(error)) }
        }
        let cancelled = state.withLock { state in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func finish(_ result: Result<T, any Error>) {
        state.withLock { $0.continuation.take() }?.resume(with: result)
    }

    func cancel() {
        state.withLock { state in
            state.cancelled = true
            return state.task
        }?.cancel()
    }
}

extension AdvisoryLock {
    func take(_ conn: PostgresConnection, logger: Logger) async throws {
        // Read to its end: a wait that fails (a bounded wait that ran out) reports it there.
        for try await _ in try await conn.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_xact_lock(\(rawValue))"), logger: logger) {}
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

    func limitLockWaits(to seconds: TimeInterval) async throws {}

    func endIdleTransactions(longerThan seconds: TimeInterval) async throws -> Int { 0 }

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
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
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

    func reading<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T {
        try await wrap { try await body(SQLiteTransaction(pool: pool, writing: false)) }
    }

    /// A write of the backend's own (GRDB's transaction), through the same gate as the SQL store's.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let pool = pool
        return try await gate.run { try await pool.write(updates) }
    }
}
