import FedGateData
import Foundation
import Testing
@_spi(Testing) @testable import FedGateStore

/// A silo whose research data sits in its own PostgreSQL: the raw penguin export loaded into a
/// table of mixed types (text, numeric, double precision, integer, NULLs), read back through a
/// role that may only SELECT, in a read-only transaction, as the same cells a CSV export gives.
@Suite("Rows from a silo's own PostgreSQL", .serialized)
struct PostgresSourceTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A scratch database holding the raw export as a typed table, and a reader role; nil without PostgreSQL outside CI.
    static func database() async throws -> (url: String, reader: String, csv: Table)? {
        guard let server = Backend.postgresServer() else { return nil }
        let csv = try Table.csv(try String(contentsOf: root.appendingPathComponent("examples/data/palmer_penguins_raw.csv"), encoding: .utf8), source: "raw.csv")
        let url = try await PostgresLedger.scratchURL(on: server, prefix: "fedgate_src_")
        let admin = try PostgresLedger(url: url)
        defer { admin.shutdown() }
        let columns = ["Species", "Island", "Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)", "Sex"]
        let index = csv.columnIndex
        func literal(_ cell: String?, quoted: Bool) -> String {
            guard let cell else { return "NULL" }
            return quoted ? "'" + cell.replacingOccurrences(of: "'", with: "''") + "'" : cell
        }
        let values = csv.rows.map { row in
            "(" + columns.enumerated().map { i, name in literal(row[index[name]!], quoted: i < 2 || i == 6) }.joined(separator: ", ") + ")"
        }
        try await admin.executeForTesting("""
            CREATE TABLE penguins (species text, island text, bill_length_mm numeric, bill_depth_mm double precision,
                                   flipper_length_mm integer, body_mass_g integer, sex text)
            """)
        try await admin.executeForTesting("INSERT INTO penguins VALUES " + values.joined(separator: ", "))
        let reader = "fg_reader_" + UUID().uuidString.prefix(8).lowercased()
        try await admin.executeForTesting("CREATE ROLE \(reader) LOGIN")
        try await admin.executeForTesting("GRANT SELECT ON penguins TO \(reader)")
        var parts = try #require(URLComponents(string: url))
        parts.user = reader
        return (url, try #require(parts.string), csv)
    }

    @Test("a table of mixed types reads as the CSV export's cells: values as text in column order, NULL missing, through a SELECT-only role")
    func readsTable() async throws {
        guard let (_, reader, csv) = try await Self.database() else { return }
        let table = try await PostgresSource.read(url: reader, password: nil, rows: .table("penguins"), source: "table penguins")
        #expect(table.header == ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"])
        #expect(table.rows.count == 344)
        #expect(table.rows[0] == ["Adelie Penguin (Pygoscelis adeliae)", "Torgersen", "39.1", "18.7", "181", "3750", "MALE"])
        let index = csv.columnIndex
        let sameSex = zip(table.rows, csv.rows).allSatisfy { $0[6] == $1[index["Sex"]!] }
        let sameMass = zip(table.rows, csv.rows).allSatisfy { $0[5] == $1[index["Body Mass (g)"]!] }
        #expect(sameSex && sameMass, "every cell as the export holds it, NULL where it says NA")
        // Read through a plan's schema, the rows are the CSV's: 333 complete of 344.
        let schema = DataSchema(columns: [.init(name: "bill_length_mm", kind: .numeric), .init(name: "bill_depth_mm", kind: .numeric),
                                          .init(name: "flipper_length_mm", kind: .numeric), .init(name: "body_mass_g", kind: .numeric),
                                          .init(name: "sex", kind: .categorical(["female", "male"]))],
                                target: .init(column: "species", task: .binary(.positives(["Gentoo penguin (Pygoscelis papua)"]))))
        let reading = try SchemaReading(table, schema: schema)
        #expect(reading.rows.count == 333 && reading.rows.filter { $0.target == 1 }.count == 119)
    }

    @Test("a query picks the rows (one island), and a statement that writes is refused by the read-only transaction, naming the source")
    func queryAndReadOnly() async throws {
        guard let (admin, reader, _) = try await Self.database() else { return }
        let dream = try await PostgresSource.read(url: reader, password: nil, rows: .query("SELECT species, sex FROM penguins WHERE island = 'Dream';"),
                                                  source: "the query")
        #expect(dream.header == ["species", "sex"] && dream.rows.count == 124)
        // Even a role that could write cannot through this reader.
        await #expect { try await PostgresSource.read(url: admin, password: nil, rows: .query("DELETE FROM penguins RETURNING *"), source: "the query") } throws: { error in
            "\(error)".hasPrefix("the query: could not be read") && "\(error)".contains("read-only")
        }
        let after = try await PostgresSource.read(url: reader, password: nil, rows: .table("penguins"), source: "table penguins")
        #expect(after.rows.count == 344, "nothing was deleted")
        await #expect { try await PostgresSource.read(url: reader, password: nil, rows: .table("patients"), source: "table patients") } throws: { error in
            "\(error)".hasPrefix("table patients: could not be read") && "\(error)".contains("patients")
        }
    }
}
