import ArgumentParser
import FedGateLearning
import FedGatePKI
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// The consortium `fedgate bench round` times: a CA, a broker process and gateway processes, each
/// with its own shard of the breast-cancer data, policy and SQLite store, in a scratch folder. A
/// value: `start` builds it, the processes it names are the only state, and `stop` ends them.
struct BenchConsortium: Sendable {
    typealias Child = BenchRoundCommand.Child

    let folder: URL
    let data: Dataset
    let scientist: TLSCredentials
    let broker: Child
    let port: Int
    private(set) var gateways: [Child] = []
    var columns: String { data.featureNames.joined(separator: ", ") }
    /// The plan's statistics release: each column's range is the data's own (a public data set).
    var statistics: String {
        let d = data.featureCount
        let bounds = data.featureNames.indices.map { j in
            let column = (0..<data.count).map { Double(data.features[$0 * d + j]) }
            return "\(data.featureNames[j]): [\(column.min()!), \(column.max()! + 1e-6)]"
        }
        return "statistics: { noise_multiplier: 2.0, bounds: { \(bounds.joined(separator: ", ")) } }"
    }

    private init(folder: URL, data: Dataset, scientist: TLSCredentials, broker: Child, port: Int) {
        (self.folder, self.data, self.scientist, self.broker, self.port) = (folder, data, scientist, broker, port)
    }

    /// The broker, then `silos` gateways enrolled in its store, all connected.
    static func start(silos: Int) async throws -> BenchConsortium {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-bench-round-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let csv = cwd.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv")
        guard FileManager.default.fileExists(atPath: csv.path) else {
            try? FileManager.default.removeItem(at: folder)
            throw ValidationError("run from the repository root (\(csv.path) not found)")
        }
        let data = try Dataset.load(csv: csv, label: "malignant")
        let ca = try ConsortiumCA.create()
        try ca.certificatePEM.write(to: folder.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        _ = try ca.issueLocally("broker", .broker, days: 2, into: folder)
        let scientist = try ca.issueLocally("bench", .dataScientist, days: 2, into: folder)
        try """
        id: broker
        listen: { host: 127.0.0.1, port: 0 }
        tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
        store: sqlite:broker.sqlite
        limits: { max_message_mb: 4, max_payload_mb: 512 }
        """.write(to: folder.appendingPathComponent("broker.yaml"), atomically: true, encoding: .utf8)
        let broker = try Child(["broker", "serve", "--config", folder.appendingPathComponent("broker.yaml").path],
                               log: folder.appendingPathComponent("broker.log"), cwd: cwd)
        guard let port = try await broker.listeningPort(within: 20) else {
            broker.stop()
            try? FileManager.default.removeItem(at: folder)
            throw ValidationError("the broker did not start:\n\(broker.output)")
        }
        var consortium = BenchConsortium(folder: folder, data: data, scientist: scientist, broker: broker, port: port)
        do {
            // The broker migrated its store before it listened: the silos are enrolled in it as they are issued.
            let registry = try SQLiteLedger(path: folder.appendingPathComponent("broker.sqlite").path)
            for i in 0..<silos {
                try await consortium.addGateway("silo-\(i)", shard: i, of: silos, ca: ca, registry: registry, cwd: cwd)
            }
            try await consortium.waitFor(silos)
        } catch {
            consortium.stop()
            throw error
        }
        return consortium
    }

    /// One silo: its certificate (enrolled at the broker), shard, policy, ledger and config, and its gateway process.
    private mutating func addGateway(_ id: String, shard i: Int, of silos: Int, ca: ConsortiumCA, registry: SQLiteLedger, cwd: URL) async throws {
        try await ca.issueLocally(id, .silo, days: 2, into: folder).enrol(in: registry, actor: "bench")
        try data.subset(Array(stride(from: i, to: data.count, by: silos))).csv.write(to: folder.appendingPathComponent("\(id).csv"), atomically: true, encoding: .utf8)
        try """
        silo: \(id)
        datasets:
          bench:
            purposes: [benchmark]
            columns: [\(columns)]
            epsilon: { per_plan: 1000.0 }
            delta_max: 1.0e-5
        residency: { allowed_regions: [eu-west], allowed_jurisdictions: [EU] }
        privacy: { min_noise_multiplier: 0.5, max_clip_norm: 10.0, require_secure_aggregation: false, min_silos_per_round: 1 }
        releases: { without_dp: [round_accuracy, final_evaluation, label_classes] }
        models: [logistic, mlp]
        executors: [builtin]
        """.write(to: folder.appendingPathComponent("\(id)-policy.yaml"), atomically: true, encoding: .utf8)
        let store = try SQLiteLedger(path: folder.appendingPathComponent("\(id).sqlite").path)
        _ = try await store.applyMigrations(Migration.embedded)
        try await store.save(DatasetBudget(name: "bench", delta: 1e-5, perPlanCap: 1000), actor: "bench")
        try await store.addConsent(ConsentRecord(dataset: "bench", purpose: "benchmark", legalBasis: "consent", scope: "bench",
                                                 validFrom: Date().addingTimeInterval(-60)), actor: "bench")
        try """
        silo: \(id)
        broker: { host: 127.0.0.1, port: \(port), name: broker }
        tls: { certificate: \(id).pem, key: \(id).key, ca: ca.pem }
        store: sqlite:\(id).sqlite
        policy: \(id)-policy.yaml
        dataset: { name: bench, csv: \(id).csv, label: malignant, test_fraction: 0.2 }
        """.write(to: folder.appendingPathComponent("\(id).yaml"), atomically: true, encoding: .utf8)
        gateways.append(try Child(["gateway", "run", "--config", folder.appendingPathComponent("\(id).yaml").path],
                                  log: folder.appendingPathComponent("\(id).log"), cwd: cwd))
    }

    /// Running gateways that said they are connected to this broker (each prints its readiness
    /// line, `gateway SILO connected to broker HOST:PORT`, once its stream is welcomed). A stopped
    /// gateway's stream closed as its process exited: the broker drops it from any round at once.
    func connected() -> Int {
        gateways.filter { gateway in
            gateway.process.isRunning && gateway.output.split(separator: "\n").contains { $0.hasPrefix("gateway ") && $0.hasSuffix(" connected to broker 127.0.0.1:\(port)") }
        }.count
    }

    func waitFor(_ n: Int) async throws {
        for _ in 0..<3000 where connected() != n { try await Task.sleep(for: .milliseconds(10)) }
        guard connected() == n else {
            let silent = gateways.filter { !$0.output.contains("connected to broker") }.map(\.log.lastPathComponent)
            throw ValidationError("\(connected()) of \(n) gateways connected (no readiness line in \(silent)):\n\(broker.output.suffix(3000))")
        }
    }

    /// Runs one plan of `rounds` FedAvg rounds on the first `n` gateways and measures it.
    func time(_ shape: String, model: String, silos n: Int, rounds: Int, samplingRate: Double, flower: Double?,
              client: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> BenchRoundCommand.Run {
        var submit = Fedgate_V1_SubmitPlanRequest()
        submit.planYaml = """
        purpose: benchmark
        datasets: [bench]
        columns: [\(columns)]
        model: \(model)
        rounds: \(rounds)
        local_steps: 1
        strategy: fedavg
        dp: { noise_multiplier: 1.0, clip_norm: 1.0, sampling_rate: \(samplingRate), delta: 1.0e-5 }
        \(statistics)
        secure_aggregation: false
        quorum: \(n)
        broker: { region: eu-west, jurisdiction: EU }
        deadlines: { round_seconds: 600 }
        """
        let live = Array(gateways.prefix(n))
        let brokerCPU = broker.cpuSeconds, gatewaysCPU = live.map(\.cpuSeconds).reduce(0, +)
        let start = ContinuousClock.now
        var status = Fedgate_V1_PlanStatusRequest()
        status.planHash = try await client.submitPlan(submit).planHash
        var state = try await client.planStatus(status)
        var lastRound: ContinuousClock.Instant?
        while state.state == "running" {
            try await Task.sleep(for: .milliseconds(20))
            state = try await client.planStatus(status)
            if lastRound == nil, state.rounds.count >= rounds { lastRound = .now }
        }
        let end = ContinuousClock.now
        guard state.state == "finished", state.rounds.allSatisfy({ $0.state == "committed" && $0.participants.count == n }) else {
            throw ValidationError("\(shape): plan \(state.state) \(state.reason) \(state.rounds.map(\.state))")
        }
        let seconds = Self.seconds(end - start)
        let parameters = try Network(kind: try ModelKind(parsing: model), inputs: data.featureCount, classes: 2, seed: 0).parameters.count
        // Each round: every silo downloads the model and uploads an update of the same size; at
        // the end every silo downloads the final model to evaluate it.
        let megabytes = Double((2 * rounds + 1) * n * (parameters * 4)) / 1e6
        return BenchRoundCommand.Run(
            shape: shape, silos: n, model: model, parameters: parameters, rounds: rounds,
            secondsPerRound: seconds / Double(rounds), megabytesMoved: megabytes, megabytesPerSecond: megabytes / seconds,
            brokerPeakMB: broker.peakMB, brokerCPUPerRound: (broker.cpuSeconds - brokerCPU) / Double(rounds),
            gatewaysCPUPerRound: (live.map(\.cpuSeconds).reduce(0, +) - gatewaysCPU) / Double(rounds),
            flowerSecondsPerRound: flower, finalEvaluationSeconds: Self.seconds(end - (lastRound ?? end)))
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

    /// Stops every process and removes the scratch folder.
    func stop() {
        gateways.forEach { $0.stop() }
        broker.stop()
        try? FileManager.default.removeItem(at: folder)
    }
}
