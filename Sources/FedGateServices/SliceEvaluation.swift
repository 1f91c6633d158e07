import FedGateData
import FedGateLearning
import FedGatePolicy

/// A plan's slices at a silo: the cells of its slice columns (`sex=female`, `smoker=true`) over the
/// silo's held-out rows, and the final model's accuracy on each cell big enough to report. Pure.
enum SliceEvaluation {
    /// Each cell's name and the rows in it, read from the rows' one-hot (or boolean) inputs as the
    /// schema encodes them (`raw`: before standardisation).
    static func cells(_ plan: TrainingPlan, rows raw: Dataset) -> [(name: String, rows: [Int])] {
        guard let schema = plan.schema, let slices = plan.slices else { return [] }
        let names = SchemaEncoding(schema: schema).inputNames
        let d = raw.featureCount
        func rows(_ input: Int, _ value: Float) -> [Int] { (0..<raw.count).filter { raw.features[$0 * d + input] == value } }
        var cells: [(String, [Int])] = []
        for slice in slices {
            guard let column = schema.columns.first(where: { $0.name == slice }) else { continue }
            switch column.kind {
            case .categorical(let vocabulary):
                for category in vocabulary {
                    if let j = names.firstIndex(of: "\(slice)=\(category)") { cells.append(("\(slice)=\(category)", rows(j, 1))) }
                }
            case .boolean:
                if let j = names.firstIndex(of: slice) { cells += [("\(slice)=true", rows(j, 1)), ("\(slice)=false", rows(j, 0))] }
            case .numeric:
                continue
            }
        }
        return cells
    }

    /// The model's accuracy on each cell of at least `minRows` rows of `test` (standardised); the
    /// smaller cells are withheld, never reported.
    static func figures(_ model: Network, on test: Dataset, cells: [(name: String, rows: [Int])], minRows: Int) -> [SliceFigure] {
        cells.filter { $0.rows.count >= minRows }.map { cell in
            SliceFigure(slice: cell.name, accuracy: model.evaluate(test.subset(cell.rows)).accuracy, examples: cell.rows.count)
        }
    }
}
