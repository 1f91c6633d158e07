import Foundation

/// What a plan's rows are, agreed by the consortium: each input column's type, what a missing
/// cell becomes, and the target. Every silo encodes its own rows with it, the same way.
public struct DataSchema: Sendable, Equatable, Codable {
    public var columns: [Column]
    public var target: Target

    public init(columns: [Column], target: Target) {
        (self.columns, self.target) = (columns, target)
    }

    public struct Column: Sendable, Equatable, Codable {
        public var name: String
        public var kind: Kind
        public var missing: Missing
        /// Values outside are refused (the row, counted by reason), not clipped.
        public var bounds: Bounds?

        public init(name: String, kind: Kind, missing: Missing = .drop, bounds: Bounds? = nil) {
            (self.name, self.kind, self.missing, self.bounds) = (name, kind, missing, bounds)
        }
    }

    public enum Kind: Sendable, Equatable, Codable {
        case numeric
        /// One-hot over the consortium's vocabulary, in its order (matched case-insensitively).
        case categorical([String])
        /// true/false, yes/no, 1/0 (case-insensitive).
        case boolean
    }

    /// What a missing cell becomes.
    public enum Missing: String, Sendable, Equatable, Codable, CaseIterable {
        /// The row is left out (counted).
        case drop
        /// The consortium's mean (numeric) or most frequent value (categorical, boolean).
        case impute
        /// The consortium's mean or most frequent value, and an extra 0/1 input saying it was missing.
        case indicator
    }

    public struct Bounds: Sendable, Equatable, Codable {
        public var lower: Double
        public var upper: Double
        public init(lower: Double, upper: Double) { (self.lower, self.upper) = (lower, upper) }
    }

    public struct Target: Sendable, Equatable, Codable {
        public var column: String
        public var task: Task
        /// A regression target's range: rows outside it are refused, and the statistics release
        /// (which standardises the target too) is sized by it.
        public var bounds: Bounds?
        public init(column: String, task: Task, bounds: Bounds? = nil) { (self.column, self.task, self.bounds) = (column, task, bounds) }
    }

    public enum Task: Sendable, Equatable, Codable {
        /// Label 1 when the rule holds.
        case binary(BinaryRule)
        /// Labels 0…k-1 in the order of `classes` (text labels, matched case-insensitively).
        case multiclass([String])
        /// A numeric target (linear regression).
        case regression

        public var classCount: Int? {
            switch self {
            case .binary: 2
            case .multiclass(let classes): classes.count
            case .regression: nil
            }
        }
    }

    /// How a binary target is read: a comparison with a number (`num > 0`), or the values that are positive.
    public enum BinaryRule: Sendable, Equatable, Codable {
        case compare(Comparison, Double)
        case positives([String])

        public enum Comparison: String, Sendable, Codable, CaseIterable { case greater = ">", greaterOrEqual = ">=", less = "<", lessOrEqual = "<=", equal = "==" }

        /// Reads `> 0`, `>= 1.5`, `== 1` (the column's name may come first: `num > 0`).
        public static func parse(_ text: String, column: String) -> BinaryRule? {
            var rest = text.trimmingCharacters(in: .whitespaces)
            if rest.hasPrefix(column) { rest = String(rest.dropFirst(column.count)).trimmingCharacters(in: .whitespaces) }
            for comparison in Comparison.allCases.sorted(by: { $0.rawValue.count > $1.rawValue.count }) where rest.hasPrefix(comparison.rawValue) {
                let number = rest.dropFirst(comparison.rawValue.count).trimmingCharacters(in: .whitespaces)
                guard let value = Double(number), value.isFinite else { return nil }
                return .compare(comparison, value)
            }
            return nil
        }

        func holds(_ cell: String) -> Bool? {
            switch self {
            case .compare(let comparison, let value):
                guard let x = Double(cell.trimmingCharacters(in: .whitespaces)), x.isFinite else { return nil }
                switch comparison {
                case .greater: return x > value
                case .greaterOrEqual: return x >= value
                case .less: return x < value
                case .lessOrEqual: return x <= value
                case .equal: return x == value
                }
            case .positives(let values):
                return values.contains { $0.caseInsensitiveCompare(cell.trimmingCharacters(in: .whitespaces)) == .orderedSame }
            }
        }
    }

    /// Why the schema itself cannot be used, or nil: a name twice, an empty vocabulary, bounds upside down.
    public var problem: String? {
        var names = Set<String>()
        for c in columns {
            guard names.insert(c.name).inserted else { return "column '\(c.name)' is listed twice" }
            if case .categorical(let vocabulary) = c.kind {
                guard !vocabulary.isEmpty else { return "column '\(c.name)' is categorical with no categories" }
                guard Set(vocabulary.map { $0.lowercased() }).count == vocabulary.count else { return "column '\(c.name)' lists a category twice" }
            }
            if let b = c.bounds, !(b.lower.isFinite && b.upper.isFinite && b.lower < b.upper) {
                return "column '\(c.name)' has bounds that are not lower < upper"
            }
        }
        guard !names.contains(target.column) else { return "the target '\(target.column)' is also an input column" }
        if case .multiclass(let classes) = target.task, classes.count < 2 { return "the target '\(target.column)' needs at least two classes" }
        if case .binary(.positives(let values)) = target.task, values.isEmpty { return "the target '\(target.column)' names no positive value" }
        return nil
    }
}

extension DataSchema {
    /// The schema as a model file's metadata states it (`fedgate.schema`): plain JSON that a NumPy
    /// or PyTorch user reads to encode a new row the way the silos did.
    public var metadataJSON: String {
        let columns: [[String: Any]] = columns.map { c in
            var entry: [String: Any] = ["name": c.name, "missing": c.missing.rawValue]
            switch c.kind {
            case .numeric: entry["type"] = "numeric"
            case .boolean: entry["type"] = "boolean"
            case .categorical(let categories): entry["type"] = "categorical"; entry["categories"] = categories
            }
            if let b = c.bounds { entry["bounds"] = [b.lower, b.upper] }
            return entry
        }
        var target: [String: Any] = ["column": target.column]
        switch self.target.task {
        case .multiclass(let classes): target["classes"] = classes
        case .regression:
            target["regression"] = true
            if let b = self.target.bounds { target["bounds"] = [b.lower, b.upper] }
        case .binary(.positives(let values)): target["positive"] = values
        case .binary(.compare(let comparison, let value)): target["positive"] = "\(self.target.column) \(comparison.rawValue) \(value)"
        }
        let object: [String: Any] = ["columns": columns, "target": target,
                                     "encoding": "numeric and boolean columns one input each (boolean 1/0); categorical columns one input per category, in order (1 for the row's category)"]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

extension DataSchema.Bounds {
    /// A JSON `[lower, upper]` as `metadataJSON` writes it; nil for anything else.
    init?(pair: Any?) {
        guard let p = pair as? [Double], p.count == 2 else { return nil }
        self.init(lower: p[0], upper: p[1])
    }
}

extension DataSchema {
    /// Reads back what `metadataJSON` wrote (a model file's `fedgate.schema`); nil when it is not that.
    public init?(metadataJSON text: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let columnList = object["columns"] as? [[String: Any]], let target = object["target"] as? [String: Any],
              let targetColumn = target["column"] as? String else { return nil }
        var columns: [Column] = []
        for entry in columnList {
            guard let name = entry["name"] as? String, let type = entry["type"] as? String,
                  let missing = (entry["missing"] as? String).flatMap(Missing.init(rawValue:)) else { return nil }
            let kind: Kind
            switch type {
            case "numeric": kind = .numeric
            case "boolean": kind = .boolean
            case "categorical":
                guard let categories = entry["categories"] as? [String] else { return nil }
                kind = .categorical(categories)
            default: return nil
            }
            columns.append(Column(name: name, kind: kind, missing: missing, bounds: Bounds(pair: entry["bounds"])))
        }
        let task: Task
        if let classes = target["classes"] as? [String] {
            task = .multiclass(classes)
        } else if target["regression"] as? Bool == true {
            task = .regression
        } else if let positives = target["positive"] as? [String] {
            task = .binary(.positives(positives))
        } else if let rule = (target["positive"] as? String).flatMap({ BinaryRule.parse($0, column: targetColumn) }) {
            task = .binary(rule)
        } else {
            return nil
        }
        self.init(columns: columns, target: Target(column: targetColumn, task: task, bounds: Bounds(pair: target["bounds"])))
    }
}
