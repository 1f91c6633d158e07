import Foundation

/// How a silo's export maps onto a plan's logical columns, from its gateway config: the local
/// column for a logical name where they differ (`sex: Sex`), and local values for logical ones
/// (`species: { "Adelie Penguin (Pygoscelis adeliae)": Adelie }`). Unnamed columns and values are
/// taken as they are.
public struct SiloMapping: Sendable, Equatable {
    public var columns: [String: String]
    public var values: [String: [String: String]]

    public init(columns: [String: String] = [:], values: [String: [String: String]] = [:]) {
        (self.columns, self.values) = (columns, values)
    }

    public func local(_ logical: String) -> String { columns[logical] ?? logical }

    /// The logical value of a cell of `logical` (mapped, or as it is), spaces trimmed.
    func value(_ cell: String, of logical: String) -> String {
        let trimmed = cell.trimmingCharacters(in: .whitespaces)
        return values[logical]?[trimmed] ?? trimmed
    }
}

/// One cell as the schema reads it: a number, a category's index, or missing (to be filled with the
/// consortium's value under `impute` or `indicator`).
public enum SchemaValue: Sendable, Equatable {
    case number(Double)
    case category(Int)
    case missing
}

/// A row the schema accepted: its input values in the schema's column order, and its target
/// (a class index, or the number for regression).
public struct SchemaRow: Sendable, Equatable {
    public let values: [SchemaValue]
    public let target: Double
}

/// A silo's rows read through a plan's schema and the silo's mapping: the rows it accepted, and
/// why each other row was refused (counted by reason; a row is never released, only counted).
/// Pure: the table is already read.
public struct SchemaReading: Sendable, Equatable {
    public let source: String
    public let rowsRead: Int
    public let rows: [SchemaRow]
    /// Each accepted row's position in the table (0-based), in order.
    public let accepted: [Int]
    /// By reason (`column 'sex': missing`), how many rows were refused.
    public let refused: [String: Int]
    /// By logical column, how many cells were missing (dropped or to be imputed).
    public let missing: [String: Int]
    /// By logical column (categorical inputs and a classification target), each value seen and how
    /// often, after the mapping: for the silo's admin to compare with the plan's vocabulary.
    public let valuesSeen: [String: [String: Int]]

    /// Reads `table` through `schema`; throws when a column the schema needs is not in the file.
    /// `requireTarget` false: rows to predict, whose target may be absent (it reads as NaN then).
    public init(_ table: Table, schema: DataSchema, mapping: SiloMapping = SiloMapping(), requireTarget: Bool = true) throws {
        let index = table.columnIndex
        func position(_ logical: String) throws -> Int {
            let local = mapping.local(logical)
            guard let i = index[local] else {
                let named = local == logical ? "'\(logical)'" : "'\(local)' (the plan's '\(logical)')"
                throw DataError(source: table.source, row: nil, column: local, problem: "has no column \(named); its columns are \(table.header.prefix(40).joined(separator: ", "))",
                                remedy: "map the plan's column to one of the file's under dataset.columns in the gateway config")
            }
            return i
        }
        let inputs = try schema.columns.map { try position($0.name) }
        let target = requireTarget ? try position(schema.target.column) : index[mapping.local(schema.target.column)]
        var rows: [SchemaRow] = [], accepted: [Int] = [], refused: [String: Int] = [:], missing: [String: Int] = [:], seen: [String: [String: Int]] = [:]
        for (number, cells) in table.rows.enumerated() {
            var values: [SchemaValue] = []
            var refusal: String?
            for (column, i) in zip(schema.columns, inputs) {
                let outcome = Self.read(cells[i], column, mapping, &seen)
                switch outcome {
                case .success(let value):
                    if value == .missing { missing[column.name, default: 0] += 1 }
                    values.append(value)
                case .failure(let reason):
                    if reason.missing { missing[column.name, default: 0] += 1 }
                    refusal = refusal ?? "column '\(column.name)': \(reason.text)"
                }
            }
            var label: Result<Double, Refusal> = .success(.nan)
            if let target, requireTarget || cells[target] != nil { label = Self.target(cells[target], schema.target, mapping, &seen) }
            if case .failure(let reason) = label { refusal = refusal ?? "target '\(schema.target.column)': \(reason.text)" }
            if let refusal {
                refused[refusal, default: 0] += 1
            } else if case .success(let y) = label {
                rows.append(SchemaRow(values: values, target: y))
                accepted.append(number)
            }
        }
        (source, rowsRead, self.rows, self.accepted, self.refused, self.missing, valuesSeen) = (table.source, table.rows.count, rows, accepted, refused, missing, seen)
    }

    struct Refusal: Error { let text: String; var missing = false }

    static func read(_ cell: String?, _ column: DataSchema.Column, _ mapping: SiloMapping,
                     _ seen: inout [String: [String: Int]]) -> Result<SchemaValue, Refusal> {
        guard let cell else {
            return column.missing == .drop ? .failure(Refusal(text: "missing", missing: true)) : .success(.missing)
        }
        let value = mapping.value(cell, of: column.name)
        switch column.kind {
        case .numeric:
            guard let x = Double(value), x.isFinite else { return .failure(Refusal(text: "not a number")) }
            if let b = column.bounds, !(b.lower...b.upper).contains(x) { return .failure(Refusal(text: "outside its bounds")) }
            return .success(.number(x))
        case .categorical(let vocabulary):
            seen[column.name, default: [:]][value, default: 0] += 1
            guard let k = vocabulary.firstIndex(where: { $0.caseInsensitiveCompare(value) == .orderedSame }) else {
                return .failure(Refusal(text: "a category not in the plan's vocabulary"))
            }
            return .success(.category(k))
        case .boolean:
            switch value.lowercased() {
            case "true", "yes", "y", "t", "1": return .success(.number(1))
            case "false", "no", "n", "f", "0": return .success(.number(0))
            default: return .failure(Refusal(text: "neither true nor false"))
            }
        }
    }

    static func target(_ cell: String?, _ target: DataSchema.Target, _ mapping: SiloMapping,
                       _ seen: inout [String: [String: Int]]) -> Result<Double, Refusal> {
        guard let cell else { return .failure(Refusal(text: "missing")) }
        let value = mapping.value(cell, of: target.column)
        switch target.task {
        case .binary(let rule):
            guard let holds = rule.holds(value) else { return .failure(Refusal(text: "not a number")) }
            seen[target.column, default: [:]][holds ? "1" : "0", default: 0] += 1
            return .success(holds ? 1 : 0)
        case .multiclass(let classes):
            seen[target.column, default: [:]][value, default: 0] += 1
            guard let k = classes.firstIndex(where: { $0.caseInsensitiveCompare(value) == .orderedSame }) else {
                return .failure(Refusal(text: "a class not in the plan's classes"))
            }
            return .success(Double(k))
        case .regression:
            guard let y = Double(value), y.isFinite else { return .failure(Refusal(text: "not a number")) }
            if let b = target.bounds, !(b.lower...b.upper).contains(y) { return .failure(Refusal(text: "outside its bounds")) }
            return .success(y)
        }
    }
}
