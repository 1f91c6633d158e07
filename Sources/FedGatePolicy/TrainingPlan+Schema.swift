import FedGateData
import Yams

/// A plan's `schema:`: the consortium's agreement on what its rows are.
///
/// ```yaml
/// schema:
///   target: { column: species, classes: [Adelie, Chinstrap, Gentoo] }   # or positive: "num > 0",
///                                                                      # positive: [M, malignant], regression: true
///   columns:
///     bill_length_mm: { type: numeric, missing: drop, bounds: [20, 70] }
///     sex: { type: categorical, categories: [female, male], missing: indicator }
///     smoker: { type: boolean, missing: impute }
/// ```
/// Its column names are the plan's `columns`, in the same order (the policy checks those names).
extension TrainingPlan {
    static func schema(_ r: YAMLReader, _ node: Yams.Node, columns: [String]) throws -> DataSchema {
        let map = try r.map(node, "schema")
        try map.only(["target", "columns"])
        let columnsMap = try r.map(try map.require("columns", "each input column's type, missing rule and bounds"), "schema.columns")
        let parsed = try columnsMap.entries.map { try column(r, $0.key, $0.value) }
        guard parsed.map(\.name) == columns else {
            throw r.error(columnsMap.node, "schema.columns", "must list the plan's columns (\(columns.joined(separator: ", "))) in the same order")
        }
        let schema = DataSchema(columns: parsed, target: try target(r, try map.require("target", "the column to predict and how to read it")))
        if let problem = schema.problem { throw r.error(node, "schema", problem) }
        return schema
    }

    private static func column(_ r: YAMLReader, _ name: String, _ node: Yams.Node) throws -> DataSchema.Column {
        let path = "schema.columns.\(name)"
        let m = try r.map(node, path)
        try m.only(["type", "categories", "missing", "bounds"])
        let kind: DataSchema.Kind
        switch try r.string(try m.require("type", "numeric, categorical or boolean"), "\(path).type") {
        case "numeric": kind = .numeric
        case "boolean": kind = .boolean
        case "categorical":
            kind = .categorical(try r.distinctStrings(try m.require("categories", "the consortium's categories, in order"), "\(path).categories"))
        case let other:
            throw r.error(m.optional("type"), "\(path).type", "must be numeric, categorical or boolean, not '\(other)'")
        }
        if case .categorical = kind {} else if let c = m.optional("categories") {
            throw r.error(c, "\(path).categories", "is only for a categorical column")
        }
        let missingText = try m.optional("missing").map { try r.string($0, "\(path).missing") } ?? "drop"
        guard let missing = DataSchema.Missing(rawValue: missingText) else {
            throw r.error(m.optional("missing"), "\(path).missing", "must be drop, impute or indicator, not '\(missingText)'")
        }
        var bounds: DataSchema.Bounds?
        if let b = m.optional("bounds") {
            guard case .numeric = kind else { throw r.error(b, "\(path).bounds", "must be [lower, upper] on a numeric column") }
            bounds = try range(r, b, "\(path).bounds", expected: "must be [lower, upper] on a numeric column")
        }
        return DataSchema.Column(name: name, kind: kind, missing: missing, bounds: bounds)
    }

    /// A `[lower, upper]` pair of numbers (each caller checks their order as its field needs).
    static func range(_ r: YAMLReader, _ node: Yams.Node, _ path: String, expected: String = "must be [lower, upper]") throws -> DataSchema.Bounds {
        guard let items = node.sequence, items.count == 2 else { throw r.error(node, path, expected) }
        return .init(lower: try r.double(items[0], path, -1e300...1e300, "a number"), upper: try r.double(items[1], path, -1e300...1e300, "a number"))
    }

    private static func target(_ r: YAMLReader, _ node: Yams.Node) throws -> DataSchema.Target {
        let m = try r.map(node, "schema.target")
        try m.only(["column", "classes", "positive", "regression", "bounds"])
        let column = try r.string(try m.require("column", "the column to predict"), "schema.target.column")
        let given = ["classes", "positive", "regression"].filter { m.optional($0) != nil }
        guard given.count == 1 else {
            throw r.error(node, "schema.target", "give exactly one of classes (multiclass), positive (binary) and regression: true")
        }
        if let b = m.optional("bounds"), m.optional("regression") == nil { throw r.error(b, "schema.target.bounds", "is for a regression target") }
        if let classes = m.optional("classes") {
            return .init(column: column, task: .multiclass(try r.distinctStrings(classes, "schema.target.classes")))
        }
        if let regression = m.optional("regression") {
            guard try r.bool(regression, "schema.target.regression") else { throw r.error(regression, "schema.target.regression", "must be true when given") }
            var bounds: DataSchema.Bounds?
            if let b = m.optional("bounds") {
                bounds = try range(r, b, "schema.target.bounds")
                guard bounds!.lower < bounds!.upper else { throw r.error(b, "schema.target.bounds", "must have lower < upper") }
            }
            return .init(column: column, task: .regression, bounds: bounds)
        }
        let positive = m.optional("positive")!
        if positive.sequence != nil {
            return .init(column: column, task: .binary(.positives(try r.distinctStrings(positive, "schema.target.positive"))))
        }
        let text = try r.string(positive, "schema.target.positive")
        guard let rule = DataSchema.BinaryRule.parse(text, column: column) else {
            throw r.error(positive, "schema.target.positive", "must be a comparison such as \"\(column) > 0\" or a list of the values that are positive")
        }
        return .init(column: column, task: .binary(rule))
    }
}
