import Foundation
import Testing
@testable import FedGateLearning
import FedGatePrivacy

/// The example data sets shipped in examples/data.
enum ExampleData {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples/data")
    static var breastCancer: Dataset { try! Dataset.load(csv: folder.appendingPathComponent("breast_cancer_wisconsin.csv"), label: "malignant") }
    static var digits: Dataset { try! Dataset.load(csv: folder.appendingPathComponent("digits_8x8.csv"), label: "digit") }
}

@Suite("Data sets and partitions")
struct DatasetTests {
    @Test("the example data sets load with their declared shapes")
    func load() {
        let bc = ExampleData.breastCancer
        #expect(bc.count == 569 && bc.featureCount == 30 && bc.classCount == 2)
        #expect(bc.labels.filter { $0 == 1 }.count == 212)
        let digits = ExampleData.digits
        #expect(digits.count == 1797 && digits.featureCount == 64 && digits.classCount == 10)
    }

    @Test("a bad CSV is refused with the file, line and column named")
    func badCSV() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-csv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.csv")
        try "a,b,y\n1,2,0\n3,oops,1\n".write(to: file, atomically: true, encoding: .utf8)
        let error = #expect(throws: DatasetError.self) { try Dataset.load(csv: file, label: "y") }
        #expect(error?.description.contains("bad.csv:3") == true)
        #expect(error?.description.contains("'b'") == true)
        #expect(throws: DatasetError.self) { try Dataset.load(csv: file, label: "missing") }
        try "a,y\n1,0\n2,-1\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: DatasetError.self) { try Dataset.load(csv: file, label: "y") }
    }

    @Test("partitions are deterministic for a seed, cover every row once, and Dirichlet skews labels")
    func partitions() throws {
        let data = ExampleData.digits
        for p in [Partitioning.iid, .dirichlet(alpha: 0.3), .quantitySkew(alpha: 1)] {
            let a = try p.split(data, silos: 5, seed: 11), b = try p.split(data, silos: 5, seed: 11)
            #expect(a == b)
            #expect(a.flatMap { $0 }.sorted() == Array(0..<data.count))
            #expect(a.allSatisfy { $0.count >= 2 })
        }
        // Label skew: with α = 0.3 the silos' class mixes are far from uniform; with iid they are close.
        func skew(_ parts: [[Int]]) -> Double {
            parts.map { rows in
                var counts = [Double](repeating: 0, count: 10)
                for r in rows { counts[data.labels[r]] += 1 }
                return counts.map { abs($0 / Double(rows.count) - 0.1) }.reduce(0, +)
            }.reduce(0, +) / Double(parts.count)
        }
        #expect(skew(try Partitioning.dirichlet(alpha: 0.3).split(data, silos: 5, seed: 1)) > 3 * skew(try Partitioning.iid.split(data, silos: 5, seed: 1)))
        #expect(throws: DatasetError.self) { try Partitioning(parsing: "dirichlet:-1") }
        #expect(throws: DatasetError.self) { try Partitioning(parsing: "random") }
    }
}

@Suite("Models and local training")
struct TrainingTests {
    @Test("analytic gradients match finite differences", arguments: [ModelKind.logistic, .softmax, .mlp(hidden: [5]), .mlp(hidden: [4, 3])])
    func gradientCheck(_ kind: ModelKind) throws {
        let classes = kind == .logistic ? 2 : 3
        var net = try Network(kind: kind, inputs: 4, classes: classes, seed: 3)
        var rng = SimulationRandom(seed: 9)
        for k in net.parameters.indices { net.parameters[k] = Float(rng.normal() * 0.5) }
        let x: ArraySlice<Float> = [0.5, -1.2, 0.3, 2.0][...]
        var ws = Network.Workspace(net)
        var grad = [Float](repeating: 0, count: net.parameters.count)
        net.lossAndGradient(x, label: 1, &ws, into: &grad)
        for k in net.parameters.indices {
            var plus = net, minus = net
            plus.parameters[k] += 1e-2; minus.parameters[k] -= 1e-2
            var g = [Float](repeating: 0, count: net.parameters.count)
            let numeric = (plus.lossAndGradient(x, label: 1, &ws, into: &g) - minus.lossAndGradient(x, label: 1, &ws, into: &g)) / 2e-2
            #expect(abs(numeric - grad[k]) < 2e-2 * max(1, abs(grad[k])), "\(kind) parameter \(k): \(numeric) vs \(grad[k])")
        }
    }

    @Test("DP-SGD reports exactly the events it spent, and ε is the accountant's for them")
    func dpEvents() throws {
        var data = ExampleData.breastCancer
        data.standardise(Standardisation(of: data))
        var settings = LocalTrainingSettings()
        settings.epochs = 2
        settings.dp = try DPSGDSettings(noiseMultiplier: 1.1, clipNorm: 1, samplingRate: 0.05)
        var scaffold: LocalTrainer.Scaffold?
        var rng = SimulationRandom(seed: 1)
        let net = try Network(kind: .logistic, inputs: 30, classes: 2, seed: 0)
        let update = try LocalTrainer(settings: settings).train(net, on: data, scaffold: &scaffold, shuffle: &rng)
        #expect(update.steps == 40)
        #expect(update.event == .dpsgd(samplingProbability: 0.05, noiseMultiplier: 1.1, steps: 40))
    }

    @Test("FedProx keeps local parameters closer to the global model")
    func fedProx() throws {
        var data = ExampleData.breastCancer
        data.standardise(Standardisation(of: data))
        let net = try Network(kind: .logistic, inputs: 30, classes: 2, seed: 0)
        func drift(_ mu: Float) throws -> Double {
            var s = LocalTrainingSettings(); s.epochs = 3; s.proxMu = mu
            var sc: LocalTrainer.Scaffold?, rng = SimulationRandom(seed: 4)
            let u = try LocalTrainer(settings: s).train(net, on: data, scaffold: &sc, shuffle: &rng)
            return zip(u.parameters, net.parameters).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        }
        #expect(try drift(1) < 0.5 * (try drift(0)))
    }

    @Test("AUC, log-loss and per-class recall have their textbook values")
    func metrics() {
        // Positive scores 0.6, 0.4 against negative 0.1, 0.45: three of four pairs ordered right.
        let m = ClassificationMetrics(probabilities: [[0.9, 0.1], [0.4, 0.6], [0.55, 0.45], [0.6, 0.4]], labels: [0, 1, 0, 1], classCount: 2)
        #expect(m.accuracy == 0.75)
        #expect(m.auc == 0.75)
        #expect(m.recallPerClass == [1, 0.5])
        #expect(abs(m.logLoss - (-(log(0.9) + log(0.6) + log(0.55) + log(0.4)) / 4)) < 1e-6)
    }
}


@Suite("A backdoor trigger")
struct BackdoorTriggerTests {
    /// One input; class 0 exactly when it exceeds 2 (logits x and 2).
    static let model = try! Network(kind: .softmax, inputs: 1, classes: 2, parameters: [1, 0, 0, 2])
    static let rows = try! Dataset(featureNames: ["x"], labelName: "y", features: [0, 1, 0.5, 3], labels: [1, 1, 1, 0])

    @Test("its success is the share of rows of other classes that the trigger sends to the target; rows of the target class are not counted")
    func success() {
        #expect(BackdoorTrigger(features: [0], value: 4, target: 0).successRate(of: Self.model, on: [Self.rows]) == 1)
        #expect(BackdoorTrigger(features: [0], value: 1, target: 0).successRate(of: Self.model, on: [Self.rows]) == 0)
        let none = try! Dataset(featureNames: ["x"], labelName: "y", features: [3], labels: [0], classCount: 2)
        #expect(BackdoorTrigger(features: [0], value: 4, target: 0).successRate(of: Self.model, on: [none]) == nil)
    }

    @Test("in the data's own units, each stamped row is standardised before the model sees it")
    func rawUnits() {
        // Raw 12 standardised with mean 0, scale 8 is 1.5: not above 2, so the trigger fails; raw 24 is 3 and works.
        let s = Standardisation(means: [0], scales: [8])
        #expect(BackdoorTrigger(features: [0], value: 12, target: 0).successRate(of: Self.model, on: [Self.rows], standardisation: s) == 0)
        #expect(BackdoorTrigger(features: [0], value: 24, target: 0).successRate(of: Self.model, on: [Self.rows], standardisation: s) == 1)
    }

    @Test("poisoning stamps the picked rows and labels them with the target, leaving the others as they were")
    func poison() {
        let poisoned = BackdoorTrigger(features: [0], value: 9, target: 0).poison(Self.rows) { $0 % 2 == 0 }
        #expect(poisoned.features == [9, 1, 9, 3] && poisoned.labels == [0, 1, 0, 0])
    }
}
