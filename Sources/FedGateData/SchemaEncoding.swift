/// The model's inputs made from schema rows, the same at every silo: numeric and boolean columns
/// as one input each, categorical columns one-hot over the plan's vocabulary, and under the
/// `indicator` rule one more input (1 when the cell was missing). A missing cell takes the
/// consortium's fill value (its mean, or its most frequent category), which every silo is given.
public struct SchemaEncoding: Sendable, Equatable {
    public let schema: DataSchema

    public init(schema: DataSchema) { self.schema = schema }

    /// The consortium's value for a missing cell of each column (by logical name): a number, or a category's index.
    public typealias Fill = [String: SchemaValue]

    /// The name of each input, in order (`island=Dream`, `sex missing`).
    public var inputNames: [String] {
        schema.columns.flatMap { column -> [String] in
            var names: [String]
            switch column.kind {
            case .numeric, .boolean: names = [column.name]
            case .categorical(let vocabulary): names = vocabulary.map { "\(column.name)=\($0)" }
            }
            if column.missing == .indicator { names.append("\(column.name) missing") }
            return names
        }
    }

    /// Each row's inputs, in `inputNames` order. Throws naming the column when a row has a missing
    /// cell and `fill` holds no value for it (the consortium's statistics did not arrive).
    public func inputs(_ rows: [SchemaRow], fill: Fill) throws -> [[Double]] {
        try rows.map { row in
            var x: [Double] = []
            x.reserveCapacity(inputNames.count)
            for (column, value) in zip(schema.columns, row.values) {
                var v = value
                if v == .missing {
                    guard let f = fill[column.name], f != .missing else {
                        throw DataError(source: "the consortium's statistics", row: nil, column: column.name,
                                        problem: "hold no value for a missing cell", remedy: "run the plan's statistics step before encoding")
                    }
                    v = f
                }
                switch (column.kind, v) {
                case (.categorical(let vocabulary), .category(let k)):
                    x.append(contentsOf: (0..<vocabulary.count).map { $0 == k ? 1 : 0 })
                case (_, .number(let n)): x.append(n)
                default:
                    throw DataError(source: "the consortium's statistics", row: nil, column: column.name,
                                    problem: "give a value of the wrong kind", remedy: "a number for numeric and boolean columns, a category for categorical ones")
                }
                if column.missing == .indicator { x.append(value == .missing ? 1 : 0) }
            }
            return x
        }
    }
}
