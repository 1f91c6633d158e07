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

/// The demo's steps, in the order `execute` takes them.
extension DemoCommand {
    /// Where the demo reads the repository's files.
    struct Paths {
        let policies: URL
        let csv: URL
    }

    /// The repository's files the demo reads (it runs from the repository's root), and the plan.
    func inputs(_ cwd: URL) throws -> (Paths, String, TrainingPlan) {
        let paths = Paths(policies: cwd.appendingPathComponent("policies"),
                          csv: cwd.appendingPathComponent("examples/data/breast_cancer_wisconsin.csv"))
        for needed in [paths.policies, paths.csv] where !FileManager.default.fileExists(atPath: needed.path) {
            throw ValidationError("run fedgate demo from the repository root: \(needed.path) not found")
        }
        let planText: String
        do { planText = try String(contentsOfFile: plan, encoding: .utf8) } catch { throw ValidationError("--plan: \(plan) cannot be read") }
        let example: TrainingPlan
        do { example = try TrainingPlan.parse(planText, file: plan) } catch { throw ValidationError("\(error)") }
        return (paths, planText, example)
    }

    /// The broker's config and process, on the embedded store.
    func startBroker(_ work: URL, _ paths: Paths) throws -> BenchRoundCommand.Child {
        try """
        id: broker
        listen: { host: 127.0.0.1, port: 0 }
        tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
        store: sqlite:broker.sqlite
        heartbeat_seconds: 0.5
        silent_after_seconds: 5
        """.write(to: work.appendingPathComponent("broker.yaml"), atomically: true, encoding: .utf8)
        return try BenchRoundCommand.Child(["broker", "serve", "--config", work.appendingPathComponent("broker.yaml").path],
                                           log: work.appendingPathComponent("broker.log"), cwd: work)
    }

    /// SIGINT and SIGTERM stop the processes the demo started, then end it.
    static func stopOnSignals(_ children: ChildGroup) -> [DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                children.stopAll()
                Foundation.exit(128 + number)
            }
            source.resume()
            return source
        }
    }

    /// The silos' non-IID shards of the breast-cancer data.
    func shards(_ paths: Paths) throws -> [(train: Dataset, test: Dataset)] {
        let data = try Dataset.load(csv: paths.csv, label: "malignant")
        var sim = FederatedSimulation.Settings()
        sim.silos = Self.silos.count
        sim.partitioning = .dirichlet(alpha: alpha)
        sim.seed = seed
        return try FederatedSimulation(data: data, settings: sim).shards()
    }

    /// The three silos, each enrolled by the operator in the broker's store (migrated before it
    /// listened) and its gateway started (added to `gateways` and `children` as it starts).
    func startSilos(_ ca: ConsortiumCA, port: Int, work: URL, _ paths: Paths, into gateways: inout [BenchRoundCommand.Child],
                    _ children: ChildGroup) async throws {
        let shards = try shards(paths)
        let registry = try SQLiteLedger(path: work.appendingPathComponent("broker.sqlite").path)
        for (i, id) in Self.silos.enumerated() {
            try await ca.issueLocally(id, .silo, days: 7, into: work).enrol(in: registry, actor: "operator")
            gateways.append(try await startGateway(id, shard: shards[i], port: port, work: work, paths))
            children.add(gateways.last!)
        }
    }

    /// One silo: its shard on disk, its store with the budget and consent its policy implies, its
    /// gateway's config and process.
    func startGateway(_ id: String, shard: (train: Dataset, test: Dataset), port: Int, work: URL, _ paths: Paths) async throws -> BenchRoundCommand.Child {
        let policyURL = paths.policies.appendingPathComponent("\(id).yaml")
        let policy = try SiloPolicy.load(policyURL)
        try shard.train.csv.write(to: work.appendingPathComponent("\(id)-train.csv"), atomically: true, encoding: .utf8)
        try shard.test.csv.write(to: work.appendingPathComponent("\(id)-test.csv"), atomically: true, encoding: .utf8)
        let store = try SQLiteLedger(path: work.appendingPathComponent("\(id).sqlite").path)
        _ = try await store.applyMigrations(Migration.embedded)
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
        policy: \(policyURL.path)
        dataset: { name: \(Self.dataset), csv: \(id)-train.csv, label: malignant, test_csv: \(id)-test.csv }
        learning_rate: 0.5
        """.write(to: work.appendingPathComponent("\(id).yaml"), atomically: true, encoding: .utf8)
        let gateway = try BenchRoundCommand.Child(["gateway", "run", "--config", work.appendingPathComponent("\(id).yaml").path],
                                                  log: work.appendingPathComponent("\(id).log"), cwd: work)
        say("  \(id): \(shard.train.count) training rows, \(shard.test.count) held out, purposes \(rule.purposes.joined(separator: ", ")), "
            + "ε cap \(rule.caps.perPlan) per plan")
        return gateway
    }

    typealias BrokerClient = Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>

    func status(_ client: BrokerClient, _ hash: String) async throws -> Fedgate_V1_PlanStatusResponse {
        var r = Fedgate_V1_PlanStatusRequest()
        r.planHash = hash
        return try await client.planStatus(r)
    }

    func submit(_ client: BrokerClient, _ text: String) async throws -> String {
        var r = Fedgate_V1_SubmitPlanRequest()
        r.planYaml = text
        return try await client.submitPlan(r).planHash
    }

    /// 4. A plan for a purpose one silo has no consent for: its refusal, with the reason; then cancelled.
    func showRefusal(_ client: BrokerClient, planText: String, example: TrainingPlan) async throws -> String {
        let other = planText.replacingOccurrences(of: "purpose: \(example.purpose)", with: "purpose: quality-improvement")
        say("\nplan for quality-improvement submitted by dana")
        let first = try await submit(client, other)
        var refusal = ""
        for _ in 0..<1500 {
            let s = try await status(client, first)
            if let r = s.refusals.first { refusal = r; break }
            if s.state != "running" { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        say(refusal.isEmpty ? "  no silo refused (unexpected)" : "  refused by \(refusal)")
        var cancel = Fedgate_V1_CancelPlanRequest()
        cancel.planHash = first
        _ = try await client.cancelPlan(cancel)
        say("  plan cancelled; the silos that had reserved budget for it released it")
        return refusal
    }

    /// 5. The example plan, as written, followed live to its end.
    func follow(_ client: BrokerClient, planText: String, example: TrainingPlan) async throws -> Fedgate_V1_PlanStatusResponse {
        let hash = try await submit(client, planText)
        say("\nplan \(hash.prefix(12))… (\(example.purpose), \(example.model), DP-SGD z = \(example.dp.noiseMultiplier ?? 0), "
            + (example.secureAggregation ? "secure aggregation with distributed DP, " : "") + "\(example.rounds) rounds) submitted by dana")
        var seen = 0
        var s = try await status(client, hash)
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
            s = try await status(client, hash)
        }
        show(s)
        guard s.state == "finished" else { throw RemoteFailure("the plan ended \(s.state): \(s.reason)") }
        return s
    }

    /// 6. The model, pulled from the registry as a data scientist would (nothing when none was registered).
    func pullModel(_ client: BrokerClient, version: UInt32) async throws -> [UInt8] {
        guard version > 0 else { return [] }
        var pull = Fedgate_V1_PullModelRequest()
        pull.version = version
        return try await RangedFetch.file(maximumBytes: TransportLimits().maximumPayloadBytes, what: "model version \(version)",
                                          rangeBytes: TransportLimits().downloadRangeBytes) { offset, length in
            pull.offset = offset
            pull.length = length
            return try await client.pullModel(pull) { try await RangedFetch.gather($0.messages, limit: length) }
        }.payload
    }

    /// 7. The compliance report over the broker's and the silos' trails: the trails and the file.
    func complianceReport(_ work: URL) async throws -> ([AuditTrail], URL) {
        var trails: [AuditTrail] = []
        for name in ["broker"] + Self.silos {
            let store = try SQLiteLedger(path: work.appendingPathComponent("\(name).sqlite").path)
            trails.append(AuditTrail(source: name, records: try await store.auditRecords()))
        }
        let report = work.appendingPathComponent("audit-report.html")
        try ComplianceHTML.document(ComplianceReport(trails, filter: AuditFilter()), filter: AuditFilter(), title: "FedGate demo: compliance report")
            .write(to: report, atomically: true, encoding: .utf8)
        return (trails, report)
    }

    /// 8. ε per silo as the broker reported it, and as each silo's own ledger has it.
    func siloSummaries(_ status: Fedgate_V1_PlanStatusResponse, example: TrainingPlan, work: URL) async throws -> [SiloSummary] {
        var silos: [SiloSummary] = []
        let z = try example.noiseMultiplier()
        for e in status.evaluations {
            let store = try SQLiteLedger(path: work.appendingPathComponent("\(e.silo).sqlite").path)
            let entries = try await store.entries(dataset: Self.dataset).filter { $0.planHash == status.planHash && $0.state == .committed }
            let fromLedger = entries.isEmpty ? 0 : try epsilon(of: .composed(entries.map(\.event)), delta: example.dp.delta)
            silos.append(SiloSummary(silo: e.silo, accuracy: e.accuracy, heldOutRows: Int(e.examples), epsilon: e.epsilonSpent, epsilonCap: e.epsilonCap,
                                     epsilonFromLedger: fromLedger,
                                     privacyCommand: Self.privacyCommand(example, noise: z, entries: entries)))
        }
        return silos
    }

    /// The `fedgate privacy epsilon` line that recomputes a silo's ε from what its ledger committed:
    /// its statistics release (round 0) and its rounds' DP-SGD steps.
    static func privacyCommand(_ plan: TrainingPlan, noise z: Double, entries: [LedgerEntry]) -> String {
        let rounds = entries.filter { $0.round > 0 }.count
        let statistics = entries.contains { $0.round == 0 } ? plan.statistics.map { " --statistics-noise-multiplier \($0.noiseMultiplier)" } ?? "" : ""
        return "fedgate privacy epsilon --noise-multiplier \(z) --sampling-rate \(plan.dp.samplingRate) "
            + "--steps \(rounds * plan.localSteps) --delta \(plan.dp.delta)" + statistics
    }

    /// The summary: one JSON object with `--json`, else lines for a person.
    func show(_ summary: Summary, gateReasons: [String]) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            return
        }
        say("\nsummary")
        say(String(format: "  final model: accuracy %.4f over all silos' held-out rows, fairness delta %.4f", summary.accuracy, summary.fairnessDelta))
        for s in summary.silos {
            say(String(format: "  %-15@ accuracy %.4f on %3d rows   ε %.4f of its cap %.1f   (its ledger: %.4f)", s.silo as NSString, s.accuracy,
                       s.heldOutRows, s.epsilon, s.epsilonCap, s.epsilonFromLedger))
        }
        say("  the same ε: \(summary.silos.first?.privacyCommand ?? "")")
        say("  gate: \(summary.gatePassed ? "passed, model version \(summary.modelVersion)" : "held the model back: \(gateReasons.joined(separator: "; "))")")
        say("  bytes: \(PlanView.bytes(summary.bytesToSilos)) to silos, \(PlanView.bytes(summary.bytesFromSilos)) from silos")
        if !summary.model.isEmpty { say("  model: \(summary.model)") }
        say("  audit report: \(summary.auditReport) (chains \(summary.auditChainsIntact ? "intact" : "BROKEN"))")
    }
}
