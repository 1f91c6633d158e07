import FedGateData
import FedGateLearning
import FedGatePolicy

/// A silo's data as its gateway holds it: the export's cells, for plans with a schema (read through
/// the plan's schema and the silo's mapping when a plan is offered), and the rows as plans without
/// a schema read them (numbers and an integer label), when the export is that. Split once into
/// training and held-out rows; both forms hold the same rows.
public struct SiloData: Sendable {
    public struct Export: Sendable {
        public let train: Table
        public let test: Table
        public let mapping: SiloMapping

        public init(train: Table, test: Table, mapping: SiloMapping) { (self.train, self.test, self.mapping) = (train, test, mapping) }
    }

    /// The numeric rows, or why the export has none (text cells, no `dataset.label`).
    public let numeric: Result<(train: Dataset, test: Dataset), NumericUnavailable>
    public let export: Export?

    public struct NumericUnavailable: Error, Sendable { public let reason: String; public init(_ reason: String) { self.reason = reason } }

    public init(train: Dataset, test: Dataset, export: Export? = nil) {
        numeric = .success((train, test))
        self.export = export
    }

    public init(numericUnavailable reason: String, export: Export) {
        numeric = .failure(NumericUnavailable(reason))
        self.export = export
    }

    /// A plan's training and held-out rows at this silo: through its schema when it has one, else
    /// the plan's columns of the numeric rows. `OfferRefusal` says why not (rule `columns` or `schema`).
    func rows(for plan: TrainingPlan) throws -> (train: Dataset, test: Dataset) {
        guard let schema = plan.schema else {
            guard case .success(let (train, test)) = numeric else {
                throw OfferRefusal(rule: "columns", "this silo's export is not all numbers with an integer label (\(numericReason)); only plans with a schema can read it")
            }
            let names = plan.columns.filter { $0 != train.labelName }
            do { return (try train.selecting(features: names), try test.selecting(features: names)) } catch {
                throw OfferRefusal(rule: "columns", "\(error)")
            }
        }
        guard let export else { throw OfferRefusal(rule: "schema", "this gateway has no export configured for plans with a schema") }
        do {
            return (try Self.dataset(export.train, schema, export.mapping), try Self.dataset(export.test, schema, export.mapping))
        } catch let error as DataError {
            throw OfferRefusal(rule: "schema", error.description)
        }
    }

    private var numericReason: String {
        if case .failure(let unavailable) = numeric { return unavailable.reason }
        return ""
    }

    /// A table's rows through a schema, as the model's inputs (`SchemaEncoding`) and class labels.
    /// Cells to impute need the consortium's statistics, which are not computed yet: such a plan is
    /// refused here rather than trained on made-up values. A regression target gives each row its number.
    static func dataset(_ table: Table, _ schema: DataSchema, _ mapping: SiloMapping) throws -> Dataset {
        if let column = schema.columns.first(where: { $0.missing != .drop }) {
            throw DataError(source: table.source, row: nil, column: column.name, problem: "asks for missing cells to be \(column.missing.rawValue)d",
                            remedy: "this FedGate does not yet compute the consortium's fill values; use missing: drop")
        }
        let reading = try SchemaReading(table, schema: schema, mapping: mapping)
        guard !reading.rows.isEmpty else {
            throw DataError(source: table.source, row: nil, column: nil,
                            problem: "has no row the schema accepts (\(reading.rowsRead) read; refused: \(reading.refused.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))",
                            remedy: "run `fedgate data profile` with this plan and check the mapping in the gateway config")
        }
        let encoding = SchemaEncoding(schema: schema)
        let inputs = try encoding.inputs(reading.rows, fill: [:])
        do {
            let features = inputs.flatMap { $0.map(Float.init) }
            guard let classes = schema.target.task.classCount else {
                return try Dataset(featureNames: encoding.inputNames, labelName: schema.target.column, features: features,
                                   targets: reading.rows.map { Float($0.target) })
            }
            return try Dataset(featureNames: encoding.inputNames, labelName: schema.target.column, features: features,
                               labels: reading.rows.map { Int($0.target) }, classCount: classes)
        } catch {
            throw DataError(source: table.source, row: nil, column: nil, problem: "cannot be encoded: \(error)", remedy: "check the plan's schema")
        }
    }
}
