import FedGateData
import Foundation
import Logging
import PostgresNIO

/// A silo's rows kept in its own PostgreSQL database (many hospitals keep research data in one, not
/// in files): a table or a query, read once in a READ ONLY transaction, every value as its text
/// (NULL is a missing cell), checked with the same limits as a CSV export. Give it a role that can
/// only read; the transaction refuses writes whatever the role.
public enum PostgresSource {
    /// What to read: a whole table, or a query (one SELECT).
    public enum Rows: Sendable, Equatable {
        case table(String)
        case query(String)
    }

    /// Reads `rows` from the database at `url` (`postgres://user@host:port/database`; the password,
    /// when needed, from `password`, never from the URL in a config). `source` names it in messages.
    public static func read(url: String, password: String?, rows: Rows, source: String, limits: Table.Limits = Table.Limits(),
                            logger: Logger = Logger(label: "fedgate.data.postgres")) async throws -> Table {
        guard let u = URLComponents(string: url), u.password == nil else {
            throw DataError(source: source, row: nil, column: nil, problem: "has a URL with a password in it",
                            remedy: "give the password in a file (dataset.postgres.password_file), not in the URL")
        }
        var config: PostgresClient.Configuration
        do { config = try PostgresURL(url).configuration } catch let problem as PostgresURL.Problem {
            throw DataError(source: source, row: nil, column: nil, problem: "has an unusable URL: \(problem)", remedy: "fix dataset.postgres.url in the gateway config")
        }
        if let password { config.password = password }
        var background = logger
        background.handler = StartupQuietHandler(wrapping: logger.handler)
        let client = PostgresClient(configuration: config, backgroundLogger: background)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        var texts: [String?] = []
        do {
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("SET TRANSACTION READ ONLY", logger: logger)
                for try await (text) in try await connection.query(PostgresQuery(unsafeSQL: wrapped(rows)), logger: logger).decode(String?.self) {
                    guard texts.count < limits.rows else { break }
                    texts.append(text)
                }
            }
        } catch {
            let cause = (error as? PostgresTransactionError).flatMap { $0.closureError ?? $0.beginError } ?? error
            let message = PostgresURL.reason(cause)
            throw DataError(source: source, row: nil, column: nil, problem: "could not be read: \(message)",
                            remedy: "check the database, the role's rights and dataset.postgres in the gateway config")
        }
        return try table(texts, source: source, limits: limits)
    }

    /// The statement that returns each row as one JSON array of [column, value as text] pairs, in
    /// the row's column order (`json_each … WITH ORDINALITY` keeps it), whatever the columns' types.
    static func wrapped(_ rows: Rows) -> String {
        let inner: String
        switch rows {
        case .table(let name): inner = "SELECT * FROM " + name.split(separator: ".").map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: ".")
        case .query(let query): inner = query.trimmingCharacters(in: .whitespacesAndNewlines.union(CharacterSet(charactersIn: ";")))
        }
        return """
            WITH q AS (\(inner))
            SELECT (SELECT json_agg(json_build_array(e.key, e.value #>> '{}') ORDER BY e.n)
                    FROM json_each(row_to_json(q)) WITH ORDINALITY AS e(key, value, n))::text
            FROM q
            """
    }

    /// The rows' JSON pairs as a table: the header from the first row, every row's columns the same.
    static func table(_ texts: [String?], source: String, limits: Table.Limits) throws -> Table {
        var header: [String]?
        var rows: [[String?]] = []
        for (i, text) in texts.enumerated() {
            guard let text, let pairs = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[Any]] else {
                throw DataError(source: source, row: i + 1, column: nil, problem: "came back in a form FedGate cannot read", remedy: "select plain columns")
            }
            let names = pairs.map { $0.first as? String ?? "" }
            if header == nil { header = names }
            guard names == header else {
                throw DataError(source: source, row: i + 1, column: nil, problem: "has other columns than the first row", remedy: "select plain columns")
            }
            rows.append(pairs.map { $0.count > 1 ? $0[1] as? String : nil })
        }
        guard let header else {
            throw DataError(source: source, row: nil, column: nil, problem: "returned no rows", remedy: "check the table or query in dataset.postgres")
        }
        return try Table.cells(rows, header: header, source: source, limits: limits)
    }
}
