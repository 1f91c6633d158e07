import ArgumentParser
import FedGateData
import FedGateLearning
import FedGatePolicy
import FedGateServices
import FedGateSimulation
import FedGateStore
import Foundation

/// A gateway config's data set, read as `gateway run` and `data profile` both need it: the
/// export's cells from its CSV file or its PostgreSQL table or query, and, for a CSV with a
/// `label`, the numeric rows of plans without a schema. A file or table that cannot be read stops
/// the command, naming file (or table), row and column.
enum SiloExport {
    /// The export's tables: the training file's (all rows, before the held-out split) and the held-out file's when given.
    static func tables(_ c: GatewayConfig, config: String) async throws -> [Table] {
        if let pg = c.postgres {
            var password: String?
            if let file = pg.passwordFile {
                do { password = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .newlines) } catch {
                    throw ValidationError("\(config): dataset.postgres.password_file: \(file.path) cannot be read")
                }
            }
            let rows: PostgresSource.Rows = pg.table.map { .table($0) } ?? .query(pg.query ?? "")
            let source = "\(pg.table.map { "table \($0)" } ?? "the query") in \(pg.url)"
            do { return [try await PostgresSource.read(url: pg.url, password: password, rows: rows, source: source)] } catch let e as DataError {
                throw ValidationError("\(config): dataset.postgres: \(e)")
            }
        }
        guard let csv = c.csv else { throw ValidationError("\(config): dataset: give csv or postgres") }
        return try (c.testCSV.map { [csv, $0] } ?? [csv]).map { try table($0, config: config) }
    }

    /// One export file's cells.
    static func table(_ url: URL, config: String) throws -> Table {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ValidationError("\(config): dataset: \(url.path) cannot be read as UTF-8 text (\(error.localizedDescription))")
        }
        do { return try Table.csv(text, source: url.path) } catch let e as DataError { throw ValidationError("\(config): dataset: \(e)") }
    }

    /// The export split into training and held-out rows (a fixed split, so restarts evaluate on the
    /// same rows; both forms split alike), with the numeric rows when the config names a label.
    static func data(_ c: GatewayConfig, config: String) async throws -> SiloData {
        let tables = try await tables(c, config: config)
        var rng = SimulationRandom(seed: 0x5ee0)
        let order = Array(0..<tables[0].rows.count).shuffled(using: &rng)
        let held = max(1, Int(Double(order.count) * c.testFraction))
        let (trainRows, testRows) = tables.count > 1 ? (Array(0..<order.count), []) : (Array(order.dropFirst(held)), Array(order.prefix(held)))
        let export = SiloData.Export(train: tables[0].subset(trainRows), test: tables.count > 1 ? tables[1] : tables[0].subset(testRows),
                                     mapping: c.mapping)
        guard let label = c.label, let csv = c.csv else {
            return SiloData(numericUnavailable: "no dataset.label in \(config): this export serves plans with a schema", export: export)
        }
        do {
            let data = try Dataset.load(csv: csv, label: label)
            guard data.count == tables[0].rows.count else {
                throw ValidationError("\(config): dataset: \(csv.path) reads as \(data.count) numeric rows but \(tables[0].rows.count) rows of cells")
            }
            if let testCSV = c.testCSV {
                let test = try Dataset.load(csv: testCSV, label: label)
                guard test.featureNames == data.featureNames else {
                    throw ValidationError("\(config): dataset.test_csv: its columns differ from dataset.csv's")
                }
                return SiloData(train: data, test: test, export: export)
            }
            return SiloData(train: data.subset(trainRows), test: data.subset(testRows), export: export)
        } catch let e as DatasetError {
            // A label was named: the admin means the export for plans without a schema, so it must read as numbers.
            throw ValidationError("\(config): dataset: \(e) (leave out dataset.label if this export is only for plans with a schema)")
        }
    }
}
