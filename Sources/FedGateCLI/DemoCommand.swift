import ArgumentParser
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateServices
import FedGateSimulation
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// `fedgate demo`: a whole consortium on this machine, on the embedded store. A CA, a broker and
/// three gateway processes (two hospitals and a clinic, each with its policy from `policies/` and a
/// non-IID shard of the breast-cancer data), a plan one silo refuses, then the example plan run to
/// its end; a summary with accuracy, ε per silo against its cap, bytes, the model and the audit report.
struct DemoCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a whole consortium on this machine: CA, broker, three gateways, a refused plan and the example plan.",
        discussion: "Run from the repository root. Everything goes into --folder (recreated on each run): certificates, SQLite stores, logs, the model and the audit report.")

    @Option(help: "The working folder (recreated: it must be empty or an earlier demo's).") var folder = "fedgate-demo"
    @Option(help: "The plan to run as written.") var plan = "examples/plans/demo.yaml"
    @Option(help: "Seed of the silos' non-IID shards.") var seed: UInt64 = 2
    @Option(help: "Dirichlet concentration of the shards' label mix (smaller: less alike).") var alpha = 2.0
    @Flag(help: "Print the summary as one JSON object on stdout (progress goes to stderr).") var json = false

    static let silos = ["hospital-north", "hospital-south", "clinic-east"]
    static let dataset = "breast-cancer-2024"

    struct SiloSummary: Codable {
        let silo: String
        let accuracy: Double
        let heldOutRows: Int
        let epsilon: Double
        let epsilonCap: Double
        /// ε recomputed here from the silo's own ledger entries for the plan, and the command that does the same.
        let epsilonFromLedger: Double
        let privacyCommand: String
    }

    struct Summary: Codable {
        let plan: String
        let rounds: Int
        let accuracy: Double
        let fairnessDelta: Double
        let gatePassed: Bool
        let modelVersion: Int
        let silos: [SiloSummary]
        let refusal: String
        let bytesToSilos: UInt64
        let bytesFromSilos: UInt64
        let model: String
        let auditReport: String
        let auditChainsIntact: Bool
        let folder: String
    }

    func say(_ line: String) {
        if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
    }

    func execute() async throws {
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let migrations = cwd.appendingPathComponent("migrations")
        let policies = cwd.appendingPathComponent("policies")
        let csv = cwd.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv")
        for needed in [migrations, policies, csv] where !FileManager.default.fileExists(atPath: needed.path) {
            throw ValidationError("run fedgate demo from the repository root: \(needed.path) not found")
        }
        let planText: String
        do { planText = try String(contentsOfFile: plan, encoding: .utf8) } catch { throw ValidationError("--plan: \(plan) cannot be read") }
        let example: TrainingPlan
        do { example = try TrainingPlan.parse(planText, file: plan) } catch { throw ValidationError("\(error)") }
        let work = try Self.prepare(URL(fileURLWithPath: folder, relativeTo: cwd).standardizedFileURL)

        say("FedGate demo in \(work.path)")
        // 1. The consortium's PKI: a CA, and a certificate for every party (keys made here stand in for enrolment).
        let ca = try ConsortiumCA.create()
        try ca.certificatePEM.write(to: work.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        func issue(_ id: String, _ role: Identity.Role) throws -> TLSCredentials { try ca.issueLocally(id, role, days: 7, into: work) }
        _ = try issue("broker", .broker)
        let scientist = try issue("dana", .dataScientist)
        say("  CA and certificates: broker, \(Self.silos.joined(separator: ", ")), dana (data scientist)")

        // 2. The broker.
        try """
        id: broker
        listen: { host: 127.0.0.1, port: 0 }
        tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
        store: sqlite:broker.sqlite
        migrations: \(migrations.path)
        heartbeat_seconds: 0.5
        silent_after_seconds: 5
        """.write(to: work.appendingPathComponent("broker.yaml"), atomically: true, encoding: .utf8)
        let broker = try BenchRoundCommand.Child(["broker", "serve", "--config", work.appendingPathComponent("broker.yaml").path],
                                                 log: work.appendingPathComponent("broker.log"), cwd: work)
        var gateways: [BenchRoundCommand.Child] = []
        defer {
            gateways.forEach { $0.stop() }
            broker.stop()
        }
        // Interrupted (Ctrl-C, SIGTERM): stop the processes this demo started, then leave.
        let children = ChildGroup(broker)
        let signals = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                children.stopAll()
                Foundation.exit(128 + number)
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        guard let port = try await broker.listeningPort(within: 30) else { throw RemoteFailure("the broker did not start:\n\(broker.output.suffix(2000))") }
        say("  broker listening on 127.0.0.1:\(port) (mutual TLS 1.3)")

        // 3. Three silos: a non-IID shard each, their policy, budget and consent in their own store, a gateway process.
        let data = try Dataset.load(csv: csv, label: "malignant")
        var sim = FederatedSimulation.Settings()
        sim.silos = Self.silos.count
        sim.partitioning = .dirichlet(alpha: alpha)
        sim.seed = seed
        let shards = try FederatedSimulation(data: data, settings: sim).shards()
        // The operator enrols each silo in the broker's store (migrated before it listened).
        let registry = try SQLiteLedger(path: work.appendingPathComponent("broker.sqlite").path)
        for (i, id) in Self.silos.enumerated() {
            try await issue(id, .silo).enrol(in: registry, actor: "operator")
            let policyURL = policies.appendingPathComponent("\(id).yaml")
            let policy = try SiloPolicy.load(policyURL)
            try shards[i].train.csv.write(to: work.appendingPathComponent("\(id)-train.csv"), atomically: true, encoding: .utf8)
            try shards[i].test.csv.write(to: work.appendingPathComponent("\(id)-test.csv"), atomically: true, encoding: .utf8)
            let store = try SQLiteLedger(path: work.appendingPathComponent("\(id).sqlite").path)
            _ = try await store.applyMigrations(try Migration.load(from: migrations))
            guard let rule = policy.datasets[Self.dataset] else { throw ValidationError("\(policyURL.path): no rule for \(Self.dataset)") }
            try await store.save(DatasetBudget(name: Self.dataset, delta: rule.caps.deltaMax, perPlanCap: rule.caps.perPlan,
                                               windowDays: rule.caps.window?.days, windowCap: rule.caps.window?.epsilon,
                                               lifetimeCap: rule.caps.lifetime), actor: "\(id)-admin")
            for purpose in rule.purposes {
                try await store.addConsent(ConsentRecord(dataset: Self.dataset, purpose: purpose, legalBasis: "consent (GDPR art. 9(2)(a))",
                                                         scope: "patients treated 2020-2024", validFrom: Date().addingTimeInterval(-86_400)),
                                           actor: "\(id)-admin")
            }
            try """
            silo: \(id)
            broker: { host: 127.0.0.1, port: \(port), name: broker }
            tls: { certificate: \(id).pem, key: \(id).key, ca: ca.pem }
            store: sqlite:\(id).sqlite
            migrations: \(migrations.path)
            policy: \(policyURL.path)
            dataset: { name: \(Self.dataset), csv: \(id)-train.csv, label: malignant, test_csv: \(id)-test.csv }
            learning_rate: 0.5
            """.write(to: work.appendingPathComponent("\(id).yaml"), atomically: true, encoding: .utf8)
            gateways.append(try BenchRoundCommand.Child(["gateway", "run", "--config", work.appendingPathComponent("\(id).yaml").path],
                                                        log: work.appendingPathComponent("\(id).log"), cwd: work))
            children.add(gateways.last!)
            say("  \(id): \(shards[i].train.count) training rows, \(shards[i].test.count) held out, purposes \(rule.purposes.joined(separator: ", ")), "
                + "ε cap \(rule.caps.perPlan) per plan")
        }
        func connected() -> Int { broker.output.components(separatedBy: "gateway connected").count - 1 }
        for _ in 0..<1500 where connected() < Self.silos.count { try await Task.sleep(for: .milliseconds(20)) }
        guard connected() >= Self.silos.count else { throw RemoteFailure("\(connected()) of 3 gateways connected:\n\(broker.output.suffix(2000))") }

        let transport = try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: scientist)
        let (status, refusal, versionFile) = try await withGRPCClient(transport: transport) { grpc in
            let client = Fedgate_V1_Broker.Client(wrapping: grpc)
            func status(_ hash: String) async throws -> Fedgate_V1_PlanStatusResponse {
                var r = Fedgate_V1_PlanStatusRequest()
                r.planHash = hash
                return try await client.planStatus(r)
            }
            func submit(_ text: String) async throws -> String {
                var r = Fedgate_V1_SubmitPlanRequest()
                r.planYaml = text
                return try await client.submitPlan(r).planHash
            }
            // 4. First ask for something one silo has no consent for: its refusal, with the reason; then cancel.
            let other = planText.replacingOccurrences(of: "purpose: \(example.purpose)", with: "purpose: quality-improvement")
            say("\nplan for quality-improvement submitted by dana")
            let first = try await submit(other)
            var refusal = ""
            for _ in 0..<1500 {
                let s = try await status(first)
                if let r = s.refusals.first { refusal = r; break }
                if s.state != "running" { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            say(refusal.isEmpty ? "  no silo refused (unexpected)" : "  refused by \(refusal)")
            var cancel = Fedgate_V1_CancelPlanRequest()
            cancel.planHash = first
            _ = try await client.cancelPlan(cancel)
            say("  plan cancelled; the silos that had reserved budget for it released it")

            // 5. The example plan, as written, followed live.
            let hash = try await submit(planText)
            say("\nplan \(hash.prefix(12))… (\(example.purpose), \(example.model), DP-SGD z = \(example.dp.noiseMultiplier ?? 0), "
                + (example.secureAggregation ? "secure aggregation with distributed DP, " : "") + "\(example.rounds) rounds) submitted by dana")
            var seen = 0
            var s = try await status(hash)
            func show(_ s: Fedgate_V1_PlanStatusResponse) {
                for r in s.rounds.dropFirst(seen) {
                    say(String(format: "  round %2d %@ with %@%@", r.round, r.state, r.participants.joined(separator: ", "),
                               r.accuracy > 0 ? String(format: "  (the model it started from scored %.3f)", r.accuracy) : ""))
                }
                seen = s.rounds.count
            }
            while s.state == "running" {
                show(s)
                try await Task.sleep(for: .milliseconds(100))
                s = try await status(hash)
            }
            show(s)
            guard s.state == "finished" else { throw RemoteFailure("the plan ended \(s.state): \(s.reason)") }

            // 6. The model, pulled from the registry as a data scientist would.
            var file: [UInt8] = []
            if s.modelVersion > 0 {
                var pull = Fedgate_V1_PullModelRequest()
                pull.version = s.modelVersion
                file = try await RangedFetch.file(maximumBytes: TransportLimits().maximumPayloadBytes, what: "model version \(s.modelVersion)",
                                                  rangeBytes: TransportLimits().downloadRangeBytes) { offset, length in
                    pull.offset = offset
                    pull.length = length
                    return try await client.pullModel(pull) { try await RangedFetch.gather($0.messages, limit: length) }
                }.payload
            }
            return (s, refusal, file)
        }

        // 7. The compliance report over the broker's and the silos' trails.
        var trails: [AuditTrail] = []
        for name in ["broker"] + Self.silos {
            let store = try SQLiteLedger(path: work.appendingPathComponent("\(name).sqlite").path)
            trails.append(AuditTrail(source: name, records: try await store.auditRecords()))
        }
        let report = work.appendingPathComponent("audit-report.html")
        try ComplianceHTML.document(ComplianceReport(trails, filter: AuditFilter()), filter: AuditFilter(), title: "FedGate demo: compliance report")
            .write(to: report, atomically: true, encoding: .utf8)
        let model = work.appendingPathComponent("model.safetensors")
        if !versionFile.isEmpty { try Data(versionFile).write(to: model, options: .atomic) }

        // 8. ε per silo, as each silo's own ledger has it.
        var silos: [SiloSummary] = []
        let z = try example.noiseMultiplier()
        for e in status.evaluations {
            let store = try SQLiteLedger(path: work.appendingPathComponent("\(e.silo).sqlite").path)
            let entries = try await store.entries(dataset: Self.dataset).filter { $0.planHash == status.planHash && $0.state == .committed }
            let fromLedger = entries.isEmpty ? 0 : try epsilon(of: .composed(entries.map(\.event)), delta: example.dp.delta)
            silos.append(SiloSummary(silo: e.silo, accuracy: e.accuracy, heldOutRows: Int(e.examples), epsilon: e.epsilonSpent, epsilonCap: e.epsilonCap,
                                     epsilonFromLedger: fromLedger,
                                     privacyCommand: "fedgate privacy epsilon --noise-multiplier \(z) --sampling-rate \(example.dp.samplingRate) "
                                         + "--steps \(entries.count * example.localSteps) --delta \(example.dp.delta)"))
        }
        let summary = Summary(plan: status.planHash, rounds: status.rounds.count, accuracy: status.accuracy, fairnessDelta: status.fairnessDelta,
                              gatePassed: status.gatePassed, modelVersion: Int(status.modelVersion), silos: silos, refusal: refusal,
                              bytesToSilos: status.bytesOut, bytesFromSilos: status.bytesIn, model: versionFile.isEmpty ? "" : model.path,
                              auditReport: report.path, auditChainsIntact: trails.allSatisfy(\.intact), folder: work.path)
        gateways.forEach { $0.stop() }
        broker.stop()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            return
        }
        say("\nsummary")
        say(String(format: "  final model: accuracy %.4f over all silos' held-out rows, fairness delta %.4f", summary.accuracy, summary.fairnessDelta))
        for s in silos {
            say(String(format: "  %-15@ accuracy %.4f on %3d rows   ε %.4f of its cap %.1f   (its ledger: %.4f)", s.silo as NSString, s.accuracy,
                       s.heldOutRows, s.epsilon, s.epsilonCap, s.epsilonFromLedger))
        }
        say("  the same ε: \(silos.first?.privacyCommand ?? "")")
        say("  gate: \(summary.gatePassed ? "passed, model version \(summary.modelVersion)" : "held the model back: \(status.gateReasons.joined(separator: "; "))")")
        say("  bytes: \(PlanView.bytes(summary.bytesToSilos)) to silos, \(PlanView.bytes(summary.bytesFromSilos)) from silos")
        if !summary.model.isEmpty { say("  model: \(summary.model)") }
        say("  audit report: \(summary.auditReport) (chains \(summary.auditChainsIntact ? "intact" : "BROKEN"))")
    }

    /// The working folder, recreated. An existing folder is removed only if an earlier demo made it.
    static func prepare(_ url: URL) throws -> URL {
        let fm = FileManager.default
        let marker = url.appendingPathComponent(".fedgate-demo")
        if fm.fileExists(atPath: url.path) {
            let contents = (try? fm.contentsOfDirectory(atPath: url.path)) ?? []
            guard contents.isEmpty || fm.fileExists(atPath: marker.path) else {
                throw ValidationError("--folder: \(url.path) exists and was not made by fedgate demo; choose another folder")
            }
            try fm.removeItem(at: url)
        }
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        try "made by fedgate demo; removed and recreated on the next run\n".write(to: marker, atomically: true, encoding: .utf8)
        return url
    }
}

/// The processes a demo started, for stopping them from a signal handler.
final class ChildGroup: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [BenchRoundCommand.Child]

    init(_ first: BenchRoundCommand.Child) { children = [first] }

    func add(_ child: BenchRoundCommand.Child) { lock.withLock { children.append(child) } }

    func stopAll() {
        for child in lock.withLock({ children }) where child.process.isRunning { kill(child.process.processIdentifier, SIGTERM) }
    }
}
