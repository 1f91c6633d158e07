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

        @Option(help: "The model file (fedgate model pull … --out model.safetensors); default with --config: the version deployed to the silo.") var model: String?
        @Option(help: "The rows to score (CSV with a header).") var rows: String
        @Option(help: "Where to write the predictions (CSV).") var out: String
        @Option(help: "A gateway config: its dataset mapping and label apply to the rows, and its deployed version is the default model.") var config: String?

        func execute() async throws {
            let gateway = try config.map { try loadFile(GatewayConfig.load, $0) }
            let (scorer, source) = try Self.scorer(model: model, gateway: gateway, config: config)
            let table = try SiloExport.table(URL(fileURLWithPath: rows), config: "--rows")
            let result: (predictions: [ModelScorer.Prediction], refused: [String: Int])
            do { result = try scorer.predict(table, mapping: gateway?.mapping ?? SiloMapping(), labelColumn: gateway?.label) } catch let e as DataError {
                throw ValidationError("--rows: \(e)")
            }
            print("model: \(source)")
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

        /// The model to score with: `--model`, else the version deployed to the gateway of `--config`.
        static func scorer(model: String?, gateway: GatewayConfig?, config: String?) throws -> (ModelScorer, String) {
            if let model {
                do { return (try ModelScorer(file: Array(try Data(contentsOf: URL(fileURLWithPath: model)))), model) } catch let e as ModelScorer.Unusable {
                    throw ValidationError("--model: \(model): \(e)")
                } catch { throw ValidationError("--model: \(model) cannot be read") }
            }
            guard let gateway, let config else { throw ValidationError("--model: give a model file, or --config for the version deployed to the silo") }
            let deployed: (record: DeployedModels.Record, bytes: [UInt8])?
            do { deployed = try DeployedModels(folder: gateway.deployments).currentFile() } catch { throw ValidationError("\(config): deployments: \(error)") }
            guard let deployed else {
                throw ValidationError("\(config): no version is deployed to this silo (\(gateway.deployments.path) holds none); give --model, or ask the consortium to deploy one")
            }
            do { return (try ModelScorer(file: deployed.bytes), "version \(deployed.record.version) deployed to \(gateway.silo)") } catch {
                throw ValidationError("\(config): the deployed version \(deployed.record.version) cannot be used: \(error)")
            }
        }

        /// A CSV cell, quoted when it holds a comma, a quote or a line end.
        static func cell(_ text: String) -> String {
            text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }
    }
}
