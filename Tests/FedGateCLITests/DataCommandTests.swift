import ArgumentParser
import FedGateData
@_spi(Testing) @testable import FedGateStore
import Foundation
import Testing
@testable import FedGateCLI

/// `fedgate data profile`: a silo admin sees, locally, what a plan would read of their own export.
@Suite("fedgate data profile")
struct DataCommandTests {
    /// A gateway config's lines up to its data set's name (the source and mapping follow).
    static func configHead(_ silo: String) -> String {
        """
        silo: \(silo)
        broker: { host: 127.0.0.1, port: 7443, name: broker }
        tls: { certificate: cert.pem, key: key.pem, ca: ca.pem }
        store: sqlite:ledger.sqlite
        policy: policy.yaml
        dataset:
          name: penguins
        """
    }

    /// A silo folder with the raw penguin export (as `csv`, edited by `edit`) and a gateway config mapping it.
    func silo(edit: (String) -> String = { $0 }, mapping: Bool = true) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-profile-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let raw = try String(contentsOfFile: "examples/data/palmer_penguins_raw.csv", encoding: .utf8)
        try edit(raw).write(to: folder.appendingPathComponent("biscoe.csv"), atomically: true, encoding: .utf8)
        try """
        \(Self.configHead("biscoe"))
          csv: biscoe.csv
          label: Species
        \(mapping ? """
          columns: { bill_length_mm: "Culmen Length (mm)", bill_depth_mm: "Culmen Depth (mm)", flipper_length_mm: "Flipper Length (mm)",
                     body_mass_g: "Body Mass (g)", sex: Sex, species: Species }
          values:
            species: { "Adelie Penguin (Pygoscelis adeliae)": Adelie, "Chinstrap penguin (Pygoscelis antarctica)": Chinstrap,
                       "Gentoo penguin (Pygoscelis papua)": Gentoo }
        """ : "")
        """.write(to: folder.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
        return folder
    }

    func profile(_ folder: URL, plan: String = "examples/plans/penguins-species.yaml", json: Bool = false) async throws -> String {
        try await DataCommand.Profile.parse(["--config", folder.appendingPathComponent("gateway.yaml").path, "--plan", plan] + (json ? ["--json"] : [])).output()
    }

    func failure(_ body: () async throws -> String) async -> String {
        do { return "read: \(try await body())" } catch { return FedGateCommand.message(for: error) }
    }

    @Test("the raw export through the penguin plan: rows read, usable and refused by reason, missing cells, values seen")
    func profilesRawExport() async throws {
        let folder = try silo()
        let text = try await profile(folder)
        #expect(text.contains("344 rows read, 333 usable, 11 refused"), "\(text)")
        #expect(text.contains("refused      2  column 'bill_length_mm': missing") && text.contains("refused      9  column 'sex': missing"))
        #expect(text.contains("sex 11") && text.contains("values of species: Adelie 152, Gentoo 124, Chinstrap 68"))
        let json = try #require(JSONSerialization.jsonObject(with: Data(try await profile(folder, json: true).utf8)) as? [String: Any])
        let file = try #require((json["files"] as? [[String: Any]])?.first)
        #expect(file["usable"] as? Int == 333 && (file["refused"] as? [String: Int])?["column 'bill_length_mm': missing"] == 2)
    }

    @Test("an export whose columns are not mapped says which column is missing and where to map it")
    func unmappedColumns() async throws {
        let message = await failure { try await profile(try silo(mapping: false)) }
        #expect(message.contains("biscoe.csv") && message.contains("has no column 'bill_length_mm'") && message.contains("dataset.columns"), "\(message)")
    }

    @Test("a broken export is named by file and row, and nothing is profiled")
    func brokenExport() async throws {
        let message = await failure { try await profile(try silo { $0.replacingOccurrences(of: "\"Adult, 1 Egg Stage\",N1A2", with: "Adult, 1 Egg Stage,N1A2") }) }
        #expect(message.contains("biscoe.csv, row 2: has 18 cells where the header names 17"), "\(message)")
    }

    @Test("a plan without a schema, or for another data set, is refused with the reason")
    func unsuitablePlans() async throws {
        let folder = try silo()
        #expect(await failure { try await profile(folder, plan: "examples/plans/breast-cancer-research.yaml") }.contains("has no schema"))
    }
}

/// `fedgate data profile` on a gateway whose rows sit in the silo's own PostgreSQL.
@Suite("fedgate data profile on a PostgreSQL source", .serialized)
struct DataProfilePostgresTests {
    @Test("the penguin rows from a table, read through a password file's role: the same profile as the CSV export's")
    func profilesTable() async throws {
        guard let server = ProcessInfo.processInfo.environment["FEDGATE_TEST_POSTGRES_URL"] else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must run the PostgreSQL source test: FEDGATE_TEST_POSTGRES_URL is not set") }
            return
        }
        let url = try await PostgresLedger.scratchURL(on: server, prefix: "fedgate_prof_")
        let admin = try PostgresLedger(url: url)
        defer { admin.shutdown() }
        let raw = try Table.csv(try String(contentsOfFile: "examples/data/palmer_penguins_raw.csv", encoding: .utf8), source: "raw.csv")
        let keep = ["Species", "Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)", "Sex"].map { raw.columnIndex[$0]! }
        func quoted(_ s: String?) -> String { s.map { "'" + $0.replacingOccurrences(of: "'", with: "''") + "'" } ?? "NULL" }
        try await admin.executeForTesting("CREATE TABLE penguins (species text, bill_length_mm real, bill_depth_mm real, flipper_length_mm int, body_mass_g int, sex text)")
        try await admin.executeForTesting("INSERT INTO penguins VALUES " + raw.rows.map { row in
            "(" + keep.enumerated().map { i, j in i == 0 || i == 5 ? quoted(row[j]) : (row[j] ?? "NULL") }.joined(separator: ", ") + ")"
        }.joined(separator: ", "))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-profile-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "not needed by a trust login\n".write(to: folder.appendingPathComponent("db-password"), atomically: true, encoding: .utf8)
        try """
        \(DataCommandTests.configHead("dream"))
          postgres: { url: "\(url)", table: penguins, password_file: db-password }
          values:
            species: { "Adelie Penguin (Pygoscelis adeliae)": Adelie, "Chinstrap penguin (Pygoscelis antarctica)": Chinstrap,
                       "Gentoo penguin (Pygoscelis papua)": Gentoo }
        """.write(to: folder.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
        let text = try await DataCommand.Profile.parse(["--config", folder.appendingPathComponent("gateway.yaml").path,
                                                        "--plan", "examples/plans/penguins-species.yaml"]).output()
        #expect(text.contains("table penguins in \(url): 344 rows read, 333 usable, 11 refused"), "\(text)")
        #expect(text.contains("values of species: Adelie 152, Gentoo 124, Chinstrap 68"))
        #expect(!text.contains("not needed"), "the password is never printed")
    }
}
