import Crypto
import FedGateData
import FedGateLearning
import FedGateServices
import Foundation
import Testing
@testable import FedGateCLI

/// `fedgate model predict`: a registry model used at the silo on its own rows, from the file's metadata.
@Suite("fedgate model predict")
struct ModelPredictTests {
    /// A softmax model over the penguins' schema, standardised, written as the registry writes it.
    func modelFile(_ folder: URL) throws -> (URL, Network) {
        let schema = try #require(DataSchema(metadataJSON: """
            {"columns":[{"name":"bill_length_mm","type":"numeric","missing":"drop"},{"name":"sex","type":"categorical","categories":["female","male"],"missing":"drop"}],
             "target":{"column":"species","classes":["Adelie","Chinstrap","Gentoo"]}}
            """))
        let network = try Network(kind: .softmax, inputs: 3, classes: 3, parameters: [0.5, 1, -1, -0.2, 0, 0.3, 0.1, -1, 1, 0.1, 0, -0.1])
        let inputs = ModelPayload.Inputs(columns: SchemaEncoding(schema: schema).inputNames,
                                         standardisation: Standardisation(means: [44, 0.5, 0.5], scales: [5, 0.5, 0.5]), schema: schema)
        let file = try ModelPayload.modelFile(network, chunkBytes: 1 << 16, inputs: inputs)
        let url = folder.appendingPathComponent("model.safetensors")
        try Data(file.contents).write(to: url)
        return (url, network)
    }

    /// A silo's gateway config mapping its export's names onto the schema's, with `extra` lines.
    static func gatewayConfig(in folder: URL, extra: String = "") throws {
        try ("""
            silo: dream
            broker: { host: 127.0.0.1, port: 7443 }
            tls: { certificate: c.pem, key: k.pem, ca: ca.pem }
            store: sqlite:s.sqlite
            policy: p.yaml
            dataset: { name: penguins, csv: rows.csv, columns: { bill_length_mm: "Culmen Length (mm)", sex: Sex } }

            """ + extra).write(to: folder.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
    }

    @Test("rows encoded by the file's schema (one-hot, the silo's names) are scored as the network scores them; a row it cannot read is counted, not scored")
    func predicts() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-predict-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let (model, network) = try modelFile(folder)
        try "Culmen Length (mm),Sex,note\n39.1,MALE,\"a, b\"\n50.0,FEMALE,\nNA,MALE,\n".write(to: folder.appendingPathComponent("rows.csv"), atomically: true, encoding: .utf8)
        try Self.gatewayConfig(in: folder)
        let out = folder.appendingPathComponent("predictions.csv")
        try await ModelCommand.Predict.parse(["--model", model.path, "--rows", folder.appendingPathComponent("rows.csv").path, "--out", out.path,
                                              "--config", folder.appendingPathComponent("gateway.yaml").path]).execute()
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "row,prediction,p_Adelie,p_Chinstrap,p_Gentoo")
        #expect(lines.count == 3, "two rows scored, the one without a bill length counted instead: \(lines)")
        // Row 1 by hand: (39.1 - 44)/5, female (0 - 0.5)/0.5, male (1 - 0.5)/0.5.
        var workspace = Network.Workspace(network)
        let p = network.forward([Float((39.1 - 44) / 5), -1, 1][...], &workspace)
        let best = ["Adelie", "Chinstrap", "Gentoo"][p.indices.max { p[$0] < p[$1] }!]
        #expect(lines[1].hasPrefix("1,\(best),\(String(format: "%.6f", Double(p[0])))"), "\(lines[1]) against \(p)")
    }

    @Test("with --config and no --model, the version deployed to the silo scores the rows; with none deployed the command says so, naming the folder")
    func deployedVersion() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-predict-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let (model, _) = try modelFile(folder)
        try "Culmen Length (mm),Sex\n39.1,MALE\n50.0,FEMALE\n".write(to: folder.appendingPathComponent("rows.csv"), atomically: true, encoding: .utf8)
        try Self.gatewayConfig(in: folder, extra: "deployments: kept\n")
        let ask = ["--rows", folder.appendingPathComponent("rows.csv").path, "--config", folder.appendingPathComponent("gateway.yaml").path]
        let out = folder.appendingPathComponent("deployed.csv"), direct = folder.appendingPathComponent("direct.csv")
        await #expect { try await ModelCommand.Predict.parse(ask + ["--out", out.path]).execute() } throws: {
            FedGateCommand.message(for: $0).contains("no version is deployed") && FedGateCommand.message(for: $0).contains("kept")
        }
        let bytes = Array(try Data(contentsOf: model))
        let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        try DeployedModels(folder: folder.appendingPathComponent("kept")).install(3, sha256: sha, bytes: bytes, watch: ["bill_length_mm"])
        try await ModelCommand.Predict.parse(ask + ["--out", out.path]).execute()
        try await ModelCommand.Predict.parse(ask + ["--out", direct.path, "--model", model.path]).execute()
        #expect(try String(contentsOf: out, encoding: .utf8) == String(contentsOf: direct, encoding: .utf8))
        // A file changed on disk no longer hashes to the record: refused, not used.
        try Data("tampered".utf8).write(to: folder.appendingPathComponent("kept/v3.safetensors"))
        await #expect { try await ModelCommand.Predict.parse(ask + ["--out", out.path]).execute() } throws: {
            FedGateCommand.message(for: $0).contains("does not hash to the recorded SHA-256")
        }
    }

    @Test("a file that is not a FedGate model is refused, naming the file")
    func notAModel() async throws {
        let bogus = FileManager.default.temporaryDirectory.appendingPathComponent("bogus-\(UUID().uuidString.prefix(8)).safetensors")
        try Data("not a model".utf8).write(to: bogus)
        await #expect { try await ModelCommand.Predict.parse(["--model", bogus.path, "--rows", "x.csv", "--out", "y.csv"]).execute() } throws: {
            FedGateCommand.message(for: $0).contains(bogus.path)
        }
    }
}
