import Foundation

// One SQL store over a small dialect: the statements and the domain logic around them are written
// once (`SQLStore` extensions, one per concept) and run on PostgreSQL and SQLite alike. A backend
// says only what differs: how a bound value is written, whether `FOR UPDATE` exists, what an
// advisory lock is, and which errors mean the database cannot be reached (its `wrap`).

/// A value bound into a statement or read from a row: the types both backends store.
public enum SQLValue: Sendable, Equatable, CustomStringConvertible {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    public var description: String {
        switch self {
        case .null: "NULL"
        case .integer(let i): "\(i)"
        case .real(let d): "\(d)"
        case .text(let s): "'\(s.prefix(64))'"
        case .blob(let b): "\(b.count) bytes"
        }
    }
}

/// A Swift value that binds as an `SQLValue`.
protocol SQLBindable { var sqlValue: SQLValue { get } }
extension String: SQLBindable { var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Double: SQLBindable { var sqlValue: SQLValue { .real(self) } }
extension Date: SQLBindable { var sqlValue: SQLValue { .real(timeIntervalSince1970) } }
extension Array: SQLBindable where Element == UInt8 { var sqlValue: SQLValue { .blob(self) } }

/// A Swift value read from a column.
protocol SQLReadable { init?(sql: SQLValue) }
extension String: SQLReadable { init?(sql: SQLValue) { guard case .text(let s) = sql else { return nil }; self = s } }
extension Int: SQLReadable {
    init?(sql: SQLValue) {
        switch sql {
        case .integer(let i): self = Int(i)
        case .real(let d) where d.rounded() == d && abs(d) < 9e15: self = Int(d)
        default: return nil
        }
    }
}
extension Double: SQLReadable {
    init?(sql: SQLValue) {
        switch sql {
        case .real(let d): self = d
        case .integer(let i): self = Double(i)
        default: return nil
        }
    }
}
extension Array: SQLReadable where Element == UInt8 { init?(sql: SQLValue) { guard case .blob(let b) = sql else { return nil }; self = b } }

/// Where PostgreSQL and SQLite differ in the statements the store runs.
struct SQLDialect: Sendable {
    /// The placeholder of the n-th bound value (from 1).
    let placeholder: @Sendable (Int) -> String
    /// What `FOR UPDATE` becomes (SQLite has one writer and no row locks).
    let forUpdate: String

    static let postgres = SQLDialect(placeholder: { "$\($0)" }, forUpdate: " FOR UPDATE")
    static let sqlite = SQLDialect(placeholder: { _ in "?" }, forUpdate: "")
}

/// A statement written once, with its values interpolated as bound parameters (never as text):
/// `"SELECT state FROM plan_runs WHERE plan_hash = \(hash)\(.forUpdate)"`.
struct SQLStatement: ExpressibleByStringInterpolation, Sendable {
    enum Part: Sendable { case sql(String), value(SQLValue), forUpdate }
    enum Clause { case forUpdate }

    var parts: [Part] = []

    init(stringLiteral value: String) { parts = [.sql(value)] }
    init(stringInterpolation: Interpolation) { parts = stringInterpolation.parts }

    struct Interpolation: StringInterpolationProtocol {
        var parts: [Part] = []
        init(literalCapacity: Int, interpolationCount: Int) {}
        mutating func appendLiteral(_ literal: String) { parts.append(.sql(literal)) }
        mutating func appendInterpolation(_ value: some SQLBindable) { parts.append(.value(value.sqlValue)) }
        /// A value that may be absent binds as NULL.
        mutating func appendInterpolation<T: SQLBindable>(_ value: T?) { parts.append(.value(value?.sqlValue ?? .null)) }
        mutating func appendInterpolation(_ clause: Clause) { parts.append(.forUpdate) }
        /// SQL text of the store's own (a list of column names), never a value from outside.
        mutating func appendInterpolation(raw sql: StaticString) { parts.append(.sql("\(sql)")) }
        /// A fragment of the store's own, with its values still bound.
        mutating func appendInterpolation(_ fragment: SQLStatement) { parts += fragment.parts }
    }

    /// The statement's text in `dialect`, and its values in order.
    func render(_ dialect: SQLDialect) -> (sql: String, values: [SQLValue]) {
        var sql = "", values: [SQLValue] = []
        for part in parts {
            switch part {
            case .sql(let s): sql += s
            case .value(let v):
                values.append(v)
                sql += dialect.placeholder(values.count)
            case .forUpdate: sql += dialect.forUpdate
            }
        }
        return (sql, values)
    }
}

/// A row read back: its values by column name.
struct SQLRow: Sendable {
    let columns: [String]
    let values: [SQLValue]

    /// A column's value, or a storage error naming the column: a row edited outside FedGate (text
    /// in a number column, say) is refused with a reason, never a crash.
    func get<T: SQLReadable>(_ column: String, as type: T.Type = T.self) throws -> T {
        let value = try raw(column)
        guard let read = T(sql: value) else { throw Self.unreadable(column, value, T.self) }
        return read
    }

    /// A column that may be NULL.
    func optional<T: SQLReadable>(_ column: String, as type: T.Type = T.self) throws -> T? {
        let value = try raw(column)
        if value == .null { return nil }
        guard let read = T(sql: value) else { throw Self.unreadable(column, value, T.self) }
        return read
    }

    private func raw(_ column: String) throws -> SQLValue {
        guard let i = columns.firstIndex(of: column) else { throw LedgerError.storage("the store has no column '\(column)' here: are its migrations applied?") }
        return values[i]
    }

    private static func unreadable(_ column: String, _ value: SQLValue, _ type: Any.Type) -> LedgerError {
        .storage("column '\(column)' holds \(value), not a \(type): the store was changed outside FedGate; restore it from a backup")
    }
}

/// One transaction (or, for reads, one connection) on a backend.
protocol SQLTransaction: Sendable {
    func rows(_ statement: SQLStatement) async throws -> [SQLRow]
    /// Takes a transaction-scoped lock that serialises writers across connections and processes
    /// (SQLite: nothing, its one writer already does).
    func lock(_ lock: AdvisoryLock) async throws
    /// Bounds how long this transaction waits for any lock another session holds; past it the
    /// statement fails as `unavailable` (PostgreSQL's `lock_timeout`; SQLite: its busy timeout).
    func limitLockWaits(to seconds: TimeInterval) async throws
    /// Ends the other FedGate sessions on this database that have sat inside a transaction, doing
    /// nothing, for longer than `seconds`: a frozen process's, whose locks would otherwise be held
    /// for as long as it stays frozen. Returns how many (SQLite: none; a writer there is one process).
    func endIdleTransactions(longerThan seconds: TimeInterval) async throws -> Int
}

/// A backend the SQL store runs on.
protocol SQLStore: Sendable {
    /// Runs `body` in one write transaction: everything it does lands, or nothing.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T
    /// Runs `body` for reading, outside a write transaction.
    func reading<T: Sendable>(_ body: @escaping @Sendable (any SQLTransaction) async throws -> T) async throws -> T
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
}

extension SQLTransaction {
    /// Runs a statement; the number of rows it returned (with `RETURNING 1`: the rows it changed).
    @discardableResult
    func execute(_ statement: SQLStatement) async throws -> Int { try await rows(statement).count }
}

extension SQLStore {
    /// Runs `change` and appends its audit record in one transaction: either both land or neither.
    /// `change` returns the record's subject and event.
    func audited(actor: String, at: Date, _ change: @escaping @Sendable (any SQLTransaction) async throws -> (subject: String, event: AuditEvent)) async throws {
        try await transaction { tx in
            let (subject, event) = try await change(tx)
            try await Self.append(tx, actor: actor, subject: subject, event: event, at: at)
        }
    }

    /// Appends the next audit record inside the caller's transaction, under the audit chain's lock,
    /// so the chain cannot fork.
    static func append(_ tx: any SQLTransaction, actor: String, subject: String, event: AuditEvent, at: Date) async throws {
        try await tx.lock(.auditChain)
        let last = try await tx.rows("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").first
        let r = AuditRecord.next(after: try last.map { (seq: try $0.get("seq"), hash: try $0.get("hash")) }, at: at, actor: actor,
                                 action: event.action, subject: subject, payload: event.payload)
        try await tx.execute("""
            INSERT INTO audit_records (seq, at, actor, action, subject, payload, previous_hash, hash)
            VALUES (\(r.seq), \(r.at), \(r.actor), \(r.action), \(r.subject), \(r.payload), \(r.previousHash), \(r.hash))
            """)
    }
}
