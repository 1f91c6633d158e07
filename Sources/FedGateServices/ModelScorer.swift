import FedGateData
import FedGateLearning
import FedGateTensors
import Foundation

/// A registry model file used where it was deployed: rows read and encoded as its metadata says
/// (the schema and its encoding, or the named numeric columns), standardised as the consortium
/// agreed, and scored. Predictions stay where they are made; nothing here does I/O.
public struct ModelScorer: Sendable {
    public let network: Network
    public let standardisation: Standardisation
    public let schema: DataSchema?
    /// The input columns in order, for a model trained without a schema.
    public let columns: [String]?
    /// A regression model's target standardisation: prediction = mean + scale · output.
    public let target: (mean: Double, scale: Double)?

    public struct Unusable: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// One scored row: its number in the file (1 is the first after the header), the predicted
    /// label (a regression model's prediction, in the target's units), each class's probability
    /// (empty for regression), and the row's own target when it had one.
    public struct Prediction: Sendable, Equatable {
        public let row: Int
        public let label: String
        public let probabilities: [Double]
        public let target: Double?
    }

    /// Reads a model file (`fedgate model pull`): its layers, standardisation and schema or columns.
    public init(file bytes: [UInt8]) throws {
        let file: SafeTensors
        do { file = try SafeTensors(bytes: bytes) } catch { throw Unusable(description: "not a safetensors model file: \(error)") }
        let meta = file.metadata
        guard let sizes = meta["fedgate.layers"]?.split(separator: ",").compactMap({ Int($0) }), sizes.count >= 2, sizes.allSatisfy({ $0 >= 1 }) else {
            throw Unusable(description: "the model file has no fedgate.layers: it is not a FedGate registry model")
        }
        let decode = { (key: String) -> [Double]? in meta[key].flatMap { try? JSONDecoder().decode([Double].self, from: Data($0.utf8)) } }
        guard let means = decode("fedgate.feature_means"), let scales = decode("fedgate.feature_scales"), means.count == sizes[0], scales.count == sizes[0] else {
            throw Unusable(description: "the model file carries no standardisation for its \(sizes[0]) inputs (fedgate.feature_means, fedgate.feature_scales)")
        }
        let last = sizes[sizes.count - 1]
        let targetMean = meta["fedgate.target_mean"].flatMap(Double.init), targetScale = meta["fedgate.target_scale"].flatMap(Double.init)
        if let targetMean, let targetScale, targetMean.isFinite, targetScale.isFinite, targetScale > 0 { target = (targetMean, targetScale) } else { target = nil }
        let regression = meta["fedgate.target_mean"] != nil || meta["fedgate.target_scale"] != nil
        guard !regression || (target != nil && sizes.count == 2 && last == 1) else {
            throw Unusable(description: "the model file's fedgate.target_mean and fedgate.target_scale are not a linear model's finite mean and positive scale")
        }
        let kind: ModelKind = regression ? .linear : sizes.count > 2 ? .mlp(hidden: Array(sizes[1..<(sizes.count - 1)])) : (last == 1 ? .logistic : .softmax)
        let classes = regression ? 1 : last == 1 ? 2 : last
        let dimension = try Network.parameterCount(kind: kind, inputs: sizes[0], classes: classes)
        network = try Network(kind: kind, inputs: sizes[0], classes: classes, parameters: try ModelPayload.modelParameters(bytes, dimension: dimension))
        standardisation = Standardisation(means: means.map(Float.init), scales: scales.map(Float.init))
        schema = meta["fedgate.schema"].flatMap(DataSchema.init(metadataJSON:))
        columns = meta["fedgate.columns"].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        if meta["fedgate.schema"] != nil, schema == nil { throw Unusable(description: "the model file's fedgate.schema cannot be read") }
        guard schema != nil || columns?.count == sizes[0] else {
            throw Unusable(description: "the model file names neither a schema nor its \(sizes[0]) input columns, so rows cannot be encoded for it")
        }
    }

    /// Scores the rows of `table` it can read (the others counted by reason). A model without a
    /// schema reads each row's own label from the column `labelColumn` when given (a silo's `dataset.label`).
    public func predict(_ table: Table, mapping: SiloMapping = SiloMapping(), labelColumn: String? = nil) throws -> (predictions: [Prediction], refused: [String: Int]) {
        let (inputs, numbers, targets, refused) = try encode(table, mapping: mapping, label: labelColumn)
        var workspace = Network.Workspace(network)
        var predictions: [Prediction] = []
        predictions.reserveCapacity(inputs.count)
        for (i, row) in inputs.enumerated() {
            let x = standardised(row.map(Float.init))
            let p = network.forward(x[...], &workspace).map(Double.init)
            let own = targets[i].isNaN ? nil : targets[i]
            if let target {
                predictions.append(Prediction(row: numbers[i] + 1, label: "\(target.mean + target.scale * p[0])", probabilities: [], target: own))
                continue
            }
            let k = p.indices.max { p[$0] < p[$1] } ?? 0
            predictions.append(Prediction(row: numbers[i] + 1, label: label(k), probabilities: p, target: own))
        }
        return (predictions, refused)
    }

    /// The model's inputs by name, in order: the schema's encoded inputs, or the named columns.
    public var inputNames: [String] { schema.map { SchemaEncoding(schema: $0).inputNames } ?? columns ?? [] }

    /// A class index as the schema names it (a binary target's 0 and 1, or the class's text).
    public func label(_ k: Int) -> String {
        if case .multiclass(let classes)? = schema?.target.task, classes.indices.contains(k) { return classes[k] }
        return String(k)
    }

    /// The rows of `table` as the model's standardised inputs, each with whether the model gets it
    /// right (nil: the row carries no label, or the model is a regression), for monitoring.
    public func outcomes(_ table: Table, mapping: SiloMapping = SiloMapping(), label: String? = nil) throws -> (inputs: [[Float]], right: [Bool?], refused: [String: Int]) {
        let (inputs, _, targets, refused) = try encode(table, mapping: mapping, label: label)
        let rows = inputs.map { standardised($0.map(Float.init)) }
        return (rows, outcomes(rows, targets), refused)
    }

    /// A silo's numeric rows (raw features by name, integer labels) the same way.
    public func outcomes(_ data: Dataset) throws -> (inputs: [[Float]], right: [Bool?]) {
        guard let columns else { throw Unusable(description: "the model reads its rows through a schema; these rows are numbers without one") }
        let selected: Dataset
        do { selected = try data.selecting(features: columns) } catch { throw Unusable(description: "\(error)") }
        let rows = (0..<selected.count).map { standardised(Array(selected.row($0))) }
        return (rows, outcomes(rows, selected.labels.map(Double.init)))
    }

    /// A row of raw inputs in the consortium's standard units.
    private func standardised(_ row: [Float]) -> [Float] {
        row.enumerated().map { j, v in (v - standardisation.means[j]) / standardisation.scales[j] }
    }

    /// Whether the model gets each standardised row right (nil: no label, or a regression), one workspace for all.
    private func outcomes(_ rows: [[Float]], _ targets: [Double]) -> [Bool?] {
        var workspace = Network.Workspace(network)
        return zip(rows, targets).map { x, target in
            guard target.isFinite, self.target == nil else { return nil }
            let p = network.forward(x[...], &workspace)
            return (p.indices.max { p[$0] < p[$1] } ?? 0) == Int(target)
        }
    }

    private func encode(_ table: Table, mapping: SiloMapping, label: String? = nil) throws -> ([[Double]], [Int], [Double], [String: Int]) {
        if let schema {
            let reading = try SchemaReading(table, schema: schema, mapping: mapping, requireTarget: false)
            return (try SchemaEncoding(schema: schema).inputs(reading.rows, fill: [:]), reading.accepted, reading.rows.map(\.target), reading.refused)
        }
        let names = columns ?? []
        let index = table.columnIndex
        let positions = try names.map { name in
            guard let i = index[mapping.local(name)] else {
                throw DataError(source: table.source, row: nil, column: name, problem: "has no column '\(name)', an input of the model",
                                remedy: "give rows with the model's columns (fedgate.columns), or map them under dataset.columns")
            }
            return i
        }
        var inputs: [[Double]] = [], numbers: [Int] = [], targets: [Double] = [], refused: [String: Int] = [:]
        let labelAt = label.flatMap { index[mapping.local($0)] }
        for (n, cells) in table.rows.enumerated() {
            var x: [Double] = []
            for i in positions {
                guard let text = cells[i], let v = Double(text.trimmingCharacters(in: .whitespaces)), v.isFinite else { break }
                x.append(v)
            }
            if x.count == names.count {
                inputs.append(x)
                numbers.append(n)
                targets.append(labelAt.flatMap { cells[$0] }.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) } ?? .nan)
            } else {
                refused["column '\(names[x.count])': missing or not a number", default: 0] += 1
            }
        }
        return (inputs, numbers, targets, refused)
    }
}
