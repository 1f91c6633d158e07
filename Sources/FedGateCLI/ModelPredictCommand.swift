import ArgumentParser
import FedGateData
import FedGateLearning
import FedGatePolicy
import FedGateServices
import Foundation

extension ModelCommand {
    /// `fedgate model predict`: a pulled model used at the silo, on its own rows; the predictions
    /// are written to a local file and go nowhere else.
    struct Predict: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Score rows with a model file, locally: rows encoded as its metadata says (schema or columns), predictions to a CSV.",
            discussion: "Nothing is sent anywhere. Rows the model cannot read are counted by reason, not scored. With --config, the gateway's "
                + "dataset.columns and dataset.values map the file's names and values onto the model's.")

        @Option(help: "The model file (fedgate model pull … --out model.safetensors).") var model: String
        @Option(help: "The rows to score (CSV with a header).") var rows: String
        @Option(help: "Where to write the predictions (CSV).") var out: String
        @Option(help: "A gateway config whose dataset mapping applies to the rows.") var config: String?

        func execute() async throws {
            let scorer: ModelScorer
            do { scorer = try ModelScorer(file: Array(try Data(contentsOf: URL(fileURLWithPath: model)))) } catch let e as ModelScorer.Unusable {
                throw ValidationError("--model: \(model): \(e)")
            } catch { throw ValidationError("--model: \(model) cannot be read") }
            let mapping = try config.map { try loadFile(GatewayConfig.load, $0).mapping } ?? SiloMapping()
            let table = try SiloExport.table(URL(fileURLWithPath: rows), config: "--rows")
            let result: (predictions: [ModelScorer.Prediction], refused: [String: Int])
            do { result = try scorer.predict(table, mapping: mapping) } catch let e as DataError { throw ValidationError("--rows: \(e)") }
            let regression = scorer.target != nil
            var csv = regression ? "row,prediction\n" : "row,prediction," + (0..<scorer.network.classCount).map { "p_\(scorer.label($0))" }.joined(separator: ",") + "\n"
            for p in result.predictions {
                csv += regression ? "\(p.row),\(p.label)\n" : "\(p.row),\(Self.cell(p.label)),\(p.probabilities.map { String(format: "%.6f", $0) }.joined(separator: ","))\n"
            }
            try csv.write(toFile: out, atomically: true, encoding: .utf8)
            print("\(result.predictions.count) rows scored, written to \(out)")
            for (reason, count) in result.refused.sorted(by: { $0.value > $1.value }) { print("  not scored \(count): \(reason)") }
            let labelled = result.predictions.filter { $0.target != nil }
            if regression, !labelled.isEmpty {
                let figures = RegressionMetrics(predictions: labelled.compactMap { Double($0.label) }, targets: labelled.compactMap(\.target))
                print(String(format: "RMSE %.4f, MAE %.4f, R² %.4f on the %d rows that carry the target", figures.rmse, figures.mae, figures.r2, labelled.count))
            } else if !labelled.isEmpty {
                let right = labelled.filter { scorer.label(Int($0.target ?? -1)) == $0.label }.count
                print(String(format: "accuracy %.4f on the %d rows that carry the target", Double(right) / Double(labelled.count), labelled.count))
            }
        }

        /// A CSV cell, quoted when it holds a comma, a quote or a line end.
        static func cell(_ text: String) -> String {
            text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }
    }
}
