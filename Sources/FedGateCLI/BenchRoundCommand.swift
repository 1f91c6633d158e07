import ArgumentParser
import FedGateLearning
import FedGatePKI
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import X509
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// `fedgate bench round`: whole rounds over mutual TLS on loopback, with the broker and every
/// gateway a separate `fedgate` process, as deployed. Three shapes: a tiny model (orchestration
/// overhead), Flower's shape (10⁶ parameters), and a ~100 MB model (transfer rate, broker memory).
struct BenchRoundCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "round", abstract: "Time networked rounds with a broker and gateway processes on loopback (release build).")

    @Option(help: "Gateways for the tiny and Flower-shaped runs.") var silos = 10
    @Option(help: "Rounds per run.") var rounds = 10
    @Option(help: "Gateways kept for the large-model run.") var largeSilos = 3
    @Option(help: "The large model (mlp:6144,4096 is 25.4 M parameters, 101.6 MB).") var largeModel = "mlp:6144,4096"
    @Option(help: "Rounds of the large-model run.") var largeRounds = 3
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func validate() throws {
        guard (2...50).contains(silos) else { throw ValidationError("--silos must be 2 to 50") }
        guard (1...silos).contains(largeSilos) else { throw ValidationError("--large-silos must be 1 to --silos") }
        guard rounds >= 1, largeRounds >= 1 else { throw ValidationError("--rounds and --large-rounds must be ≥ 1") }
        _ = try ModelKind(parsing: largeModel)
    }

    final class Child: @unchecked Sendable {
        let process = Process()
        let log: URL
        init(_ arguments: [String], log: URL, cwd: URL) throws {
            self.log = log
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            process.arguments = arguments
            process.currentDirectoryURL = cwd
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }
        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        /// The port a `broker serve` child reports it listens on, once it does (nil after `seconds`).
        func listeningPort(within seconds: Double) async throws -> Int? {
            let until = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < until {
                if let line = output.split(separator: "\n").first(where: { $0.contains("listening on") }), let port = Int(line.split(separator: ":").last ?? "") {
                    return port
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        func stop() { if process.isRunning { kill(process.processIdentifier, SIGTERM); process.waitUntilExit() } }
        /// CPU seconds (user + system) used so far.
        var cpuSeconds: Double {
            guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return 0 }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command name: state is field 3, utime 14 and stime 15 (1-based, whole line).
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        /// Peak resident memory (VmHWM) in MB.
        var peakMB: Double {
            let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
            return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
        }
    }

    struct Run: Codable {
        let shape: String
        let silos: Int
        let model: String
        let parameters: Int
        let rounds: Int
        let secondsPerRound: Double
        let megabytesMoved: Double
        let megabytesPerSecond: Double
        let brokerPeakMB: Double
        /// CPU seconds per round: the broker's, and all gateways' together.
        let brokerCPUPerRound: Double
        let gatewaysCPUPerRound: Double
        let flowerSecondsPerRound: Double?
        /// After the last round: the final model sent to every silo, evaluated, gated and recorded (in the time per round too).
        let finalEvaluationSeconds: Double
    }

    func execute() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-bench-round-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let migrations = cwd.appendingPathComponent("migrations")
        guard FileManager.default.fileExists(atPath: migrations.path) else { throw ValidationError("run from the repository root (migrations/ not found)") }
        let data = try Dataset.load(csv: cwd.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv"), label: "malignant")

        let ca = try ConsortiumCA.create()
        try ca.certificatePEM.write(to: folder.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        func issue(_ id: String, _ role: Identity.Role) throws -> TLSCredentials { try ca.issueLocally(id, role, days: 2, into: folder) }
        _ = try issue("broker", .broker)
        let scientist = try issue("bench", .dataScientist)
        try """
        id: broker
        listen: { host: 127.0.0.1, port: 0 }
        tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
        store: sqlite:broker.sqlite
        migrations: \(migrations.path)
        limits: { max_message_mb: 4, max_payload_mb: 512 }
        """.write(to: folder.appendingPathComponent("broker.yaml"), atomically: true, encoding: .utf8)
        let broker = try Child(["broker", "serve", "--config", folder.appendingPathComponent("broker.yaml").path],
                               log: folder.appendingPathComponent("broker.log"), cwd: cwd)
        defer { broker.stop() }
        guard let port = try await broker.listeningPort(within: 20) else { throw ValidationError("the broker did not start:\n\(broker.output)") }
        // The broker migrated its store before it listened: the silos are enrolled in it as they are issued.
        let registry = try SQLiteLedger(path: folder.appendingPathComponent("broker.sqlite").path)

        var gateways: [Child] = []
        defer { gateways.forEach { $0.stop() } }
        let columns = data.featureNames.joined(separator: ", ")
        for i in 0..<silos {
            let id = "silo-\(i)"
            try await issue(id, .silo).enrol(in: registry, actor: "bench")
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
            models: [logistic, mlp]
            executors: [builtin]
            """.write(to: folder.appendingPathComponent("\(id)-policy.yaml"), atomically: true, encoding: .utf8)
            let store = try SQLiteLedger(path: folder.appendingPathComponent("\(id).sqlite").path)
            _ = try await store.applyMigrations(try Migration.load(from: migrations))
            try await store.save(DatasetBudget(name: "bench", delta: 1e-5, perPlanCap: 1000), actor: "bench")
            try await store.addConsent(ConsentRecord(dataset: "bench", purpose: "benchmark", legalBasis: "consent", scope: "bench",
                                                     validFrom: Date().addingTimeInterval(-60)), actor: "bench")
            try """
            silo: \(id)
            broker: { host: 127.0.0.1, port: \(port), name: broker }
            tls: { certificate: \(id).pem, key: \(id).key, ca: ca.pem }
            store: sqlite:\(id).sqlite
            migrations: \(migrations.path)
            policy: \(id)-policy.yaml
            dataset: { name: bench, csv: \(id).csv, label: malignant, test_fraction: 0.2 }
            """.write(to: folder.appendingPathComponent("\(id).yaml"), atomically: true, encoding: .utf8)
            gateways.append(try Child(["gateway", "run", "--config", folder.appendingPathComponent("\(id).yaml").path],
                                      log: folder.appendingPathComponent("\(id).log"), cwd: cwd))
        }
        func connected() -> Int { broker.output.components(separatedBy: "gateway connected").count - broker.output.components(separatedBy: "gateway disconnected").count }
        func waitFor(_ n: Int) async throws {
            for _ in 0..<3000 where connected() != n { try await Task.sleep(for: .milliseconds(10)) }
            guard connected() == n else { throw ValidationError("\(connected()) of \(n) gateways connected:\n\(broker.output.suffix(3000))") }
        }
        try await waitFor(silos)

        let transport = try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: scientist)
        var results: [Run] = []
        try await withGRPCClient(transport: transport) { grpc in
            let client = Fedgate_V1_Broker.Client(wrapping: grpc)
            func run(_ shape: String, model: String, silos n: Int, rounds: Int, samplingRate: Double, flower: Double?) async throws {
                let plan = """
                purpose: benchmark
                datasets: [bench]
                columns: [\(columns)]
                model: \(model)
                rounds: \(rounds)
                local_steps: 1
                strategy: fedavg
                dp: { noise_multiplier: 1.0, clip_norm: 1.0, sampling_rate: \(samplingRate), delta: 1.0e-5 }
                secure_aggregation: false
                quorum: \(n)
                broker: { region: eu-west, jurisdiction: EU }
                deadlines: { round_seconds: 600 }
                """
                var submit = Fedgate_V1_SubmitPlanRequest()
                submit.planYaml = plan
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
                let evaluation = end - (lastRound ?? end)
                let elapsed = end - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                guard state.state == "finished", state.rounds.allSatisfy({ $0.state == "committed" && $0.participants.count == n }) else {
                    throw ValidationError("\(shape): plan \(state.state) \(state.reason) \(state.rounds.map(\.state))")
                }
                let parameters = try Network(kind: try ModelKind(parsing: model), inputs: data.featureCount, classes: 2, seed: 0).parameters.count
                // Each round: every silo downloads the model and uploads an update of the same size; at
                // the end every silo downloads the final model to evaluate it.
                let megabytes = Double((2 * rounds + 1) * n * (parameters * 4)) / 1e6
                results.append(Run(shape: shape, silos: n, model: model, parameters: parameters, rounds: rounds,
                                   secondsPerRound: seconds / Double(rounds), megabytesMoved: megabytes, megabytesPerSecond: megabytes / seconds,
                                   brokerPeakMB: broker.peakMB, brokerCPUPerRound: (broker.cpuSeconds - brokerCPU) / Double(rounds),
                                   gatewaysCPUPerRound: (live.map(\.cpuSeconds).reduce(0, +) - gatewaysCPU) / Double(rounds),
                                   flowerSecondsPerRound: flower,
                                   finalEvaluationSeconds: Double(evaluation.components.seconds) + Double(evaluation.components.attoseconds) * 1e-18))
            }
            try await run("tiny", model: "logistic", silos: silos, rounds: rounds, samplingRate: 0.1, flower: nil)
            try await run("flower-shape", model: "mlp:4096,240", silos: silos, rounds: rounds, samplingRate: 0.1,
                          flower: silos == 10 ? 18 : (silos == 2 ? 6.5 : nil))
            for g in gateways[largeSilos...] { g.stop() }
            try await waitFor(largeSilos)
            try await run("large", model: largeModel, silos: largeSilos, rounds: largeRounds, samplingRate: 0.02, flower: nil)
        }

        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
            return
        }
        print("networked rounds over mTLS on loopback: broker and gateways as separate processes")
        for r in results {
            var line = r.shape.padding(toLength: 13, withPad: " ", startingAt: 0)
                + String(format: " %2d silos  ", r.silos) + r.model.padding(toLength: 14, withPad: " ", startingAt: 0)
                + String(format: " %10d params  %7.3f s/round  %8.1f MB/s  broker peak %6.0f MB  CPU/round broker %.3f s, gateways %.3f s",
                         r.parameters, r.secondsPerRound, r.megabytesPerSecond, r.brokerPeakMB, r.brokerCPUPerRound, r.gatewaysCPUPerRound)
            line += String(format: "  final evaluation %.3f s", r.finalEvaluationSeconds)
            if let f = r.flowerSecondsPerRound { line += String(format: "  (Flower %.1f s/round: %.0f× faster; target ≥ 50×)", f, f / r.secondsPerRound) }
            print(line)
        }
    }
}

extension ConsortiumCA {
    /// A fresh key and a certificate for a party of a consortium run on this machine (the bench, the
    /// demo), written beside each other in `folder` as ID.pem and ID.key (0600).
    func issueLocally(_ id: String, _ role: Identity.Role, days: Int, into folder: URL) throws -> TLSCredentials {
        let request = try EnrollmentRequest(identity: try Identity(id: id, role: role, region: role.isService ? "eu-west" : nil))
        let pem = try issue(request.csr, days: days).serializeAsPEM()
        try pem.pemString.write(to: folder.appendingPathComponent("\(id).pem"), atomically: true, encoding: .utf8)
        try writeSecret(request.keyPEM, to: folder.appendingPathComponent("\(id).key"))
        return try TLSCredentials(certificatePEM: pem.pemString, keyPEM: request.keyPEM, caPEM: certificatePEM)
    }
}

extension TLSCredentials {
    /// Enrols the silo these credentials are for in a broker's store, as the consortium operator does
    /// with `fedgate silo enrol` (a broker serves only enrolled silos).
    func enrol(in broker: any RegistryBackend, jurisdiction: String = "EU", actor: String) async throws {
        try await broker.enroll(Party(id: identity.id, kind: .silo, region: identity.region ?? "", jurisdiction: jurisdiction,
                                      certificateSHA256: try Certificate(pemEncoded: certificatePEM).sha256Fingerprint, enrolledAt: Date()), actor: actor)
    }
}
