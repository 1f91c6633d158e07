import ArgumentParser
import FedGateData
import FedGatePolicy
import Foundation

/// `fedgate data …`: a silo admin looks at their own rows as a plan would read them, locally.
struct DataCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Look at this silo's data as a plan would read it (locally: nothing is sent).",
        subcommands: [Profile.self]
    )

    struct Profile: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Read the gateway's data set through a plan's schema and the gateway's mapping; print rows, refusals by reason, missing cells and values seen.",
            discussion: "Nothing is sent anywhere. Exit status: 0 read, 64 a file, column or schema that cannot be used (the file, row and column named).")

        @Option(help: "The gateway's config (its dataset section: the file, dataset.columns and dataset.values).") var config: String
        @Option(help: "The training plan (YAML) with a schema.") var plan: String
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func execute() async throws { print(try await output()) }

        /// What `run` prints; a file, column or schema that cannot be used throws (exit 64).
        func output() async throws -> String {
            try await deciding {
                let gateway = try loadFile(GatewayConfig.load, config)
                let plan = try loadFile(TrainingPlan.load, self.plan)
                guard let schema = plan.schema else {
                    throw CommandFailure.unusable("\(self.plan): the plan has no schema: section, so it reads numeric columns and an integer label as before; nothing to profile")
                }
                guard plan.datasets.contains(gateway.dataset) else {
                    throw CommandFailure.unusable("\(self.plan): the plan reads \(plan.datasets.joined(separator: ", ")), not this gateway's data set '\(gateway.dataset)'")
                }
                var readings: [SchemaReading] = []
                for table in try await SiloExport.tables(gateway, config: config) {
                    do { readings.append(try SchemaReading(table, schema: schema, mapping: gateway.mapping)) } catch let e as DataError {
                        throw CommandFailure.unusable(e.description)
                    }
                }
                return json ? try Self.json(readings, silo: gateway.silo, plan: plan) : Self.text(readings, silo: gateway.silo, plan: plan)
            }
        }

        static func text(_ readings: [SchemaReading], silo: String, plan: TrainingPlan) -> String {
            var lines = ["\(silo), data as plan \(plan.contentHash.prefix(16))… would read it (read here; nothing was sent):"]
            for r in readings {
                lines.append("  \(r.source): \(r.rowsRead) rows read, \(r.rows.count) usable, \(r.rowsRead - r.rows.count) refused")
                for (reason, count) in r.refused.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
                    lines.append("    refused \(String(count).leftPad(6))  \(reason)")
                }
                let missing = r.missing.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                lines.append("    missing cells: " + (missing.isEmpty ? "none" : missing.joined(separator: ", ")))
                for (column, values) in r.valuesSeen.sorted(by: { $0.key < $1.key }) {
                    let shown = values.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(20).map { "\($0.key) \($0.value)" }
                    lines.append("    values of \(column): " + shown.joined(separator: ", ") + (values.count > 20 ? ", … (\(values.count) in all)" : ""))
                }
            }
            return lines.joined(separator: "\n")
        }

        static func json(_ readings: [SchemaReading], silo: String, plan: TrainingPlan) throws -> String {
            let object: [String: Any] = [
                "silo": silo, "plan": plan.contentHash,
                "files": readings.map { r -> [String: Any] in
                    ["file": r.source, "rows_read": r.rowsRead, "usable": r.rows.count, "refused": r.refused, "missing": r.missing, "values_seen": r.valuesSeen]
                },
            ]
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }
    }
}

private extension String {
    func leftPad(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
