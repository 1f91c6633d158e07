import FedGateLearning
import FedGatePolicy
import FedGateRounds
@testable import FedGateServices
import FedGateStore
import Foundation
import Logging
import Testing
@testable import FedGateConsortiumTesting

/// The broker's parts that need no network: the store a plan's run writes through (waiting out an
/// unreachable database), model promotion (the gate and the registry) and plan recovery, on a real
/// SQLite store and a fixed wall clock.
@Suite("A broker's retrying store, model promotion and plan recovery")
struct BrokerPartsTests {
    static let logger = Logger(label: "broker-parts-test")
    /// A fixed time of day: what the parts record must be the injected clock's, not the system's.
    static let noon = Date(timeIntervalSince1970: 1_796_000_400)
    static let clock = WallClock { noon }

    func store() async throws -> SQLiteLedger {
        let store = try SQLiteLedger(path: FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-broker-parts-\(UUID().uuidString).sqlite").path)
        _ = try await store.applyMigrations(try Migration.load(from: Consortium.migrations))
        return store
    }

    func retrying(_ base: any BrokerStore, patience: Duration = .seconds(60), metrics: FedGateMetrics = FedGateMetrics()) -> RetryingStore {
        RetryingStore(base: base, patience: patience, logger: Self.logger, metrics: metrics)
    }

    /// Counts the attempts of a store call that fails `failures` times before it answers.
    actor Attempts {
        var count = 0
        func next() -> Int { count += 1; return count }
    }

    // MARK: The retrying store

    @Test("a store call of a plan's run waits out a database that cannot be reached, then answers")
    func retriesUnavailable() async throws {
        let store = retrying(try await store())
        let attempts = Attempts()
        let answer = try await store.retrying {
            if await attempts.next() < 3 { throw LedgerError.unavailable("connection refused") }
            return 7
        }
        #expect(answer == 7)
        #expect(await attempts.count == 3)
    }

    /// A call that fails for good: `unavailable` once the patience is spent, or any other store error at once.
    static let finalFailures: [(String, Duration, LedgerError)] = [
        ("an unreachable database once the patience is spent", .zero, .unavailable("connection refused")),
        ("a refused write (not tried again)", .seconds(60), .storage("round 2 cannot go from committed to offered")),
    ]

    @Test("a store call fails with the store's own error, tried once", arguments: finalFailures)
    func failsOnce(_ failure: (String, Duration, LedgerError)) async throws {
        let (_, patience, error) = failure
        let store = retrying(try await store(), patience: patience)
        let attempts = Attempts()
        await #expect(throws: error) {
            try await store.retrying { () async throws -> Int in
                _ = await attempts.next()
                throw error
            }
        }
        #expect(await attempts.count == 1)
    }

    @Test("the retrying store writes through to the store it decorates")
    func writesThrough() async throws {
        let base = try await store()
        let store = retrying(base)
        try await store.audit(.planCancelled(.init(state: "running")), actor: "dana", subject: "plan-1", at: Self.noon)
        let records = try await base.auditRecords()
        #expect(records.last?.action == "plan.cancel" && records.last?.at == Self.noon)
        #expect(try await store.auditTail()?.seq == records.last?.seq)
    }

    // MARK: Model promotion

    func promotion(_ store: any BrokerStore) -> ModelPromotion {
        ModelPromotion(store: retrying(store), brokerID: "broker", wallClock: Self.clock, logger: Self.logger)
    }

    func finalModel() throws -> ModelFile {
        let network = try Network(kind: .logistic, inputs: 3, classes: 2, seed: 1)
        return try ModelPayload.modelFile(network, chunkBytes: 1 << 16)
    }

    func plan(gate: String?) throws -> TrainingPlan {
        try TrainingPlan.parse(Fixtures.plan(rounds: 2, quorum: 2, evaluation: gate), file: "plan.yaml")
    }

    static let evaluations = ModelPromotion.Evaluations(
        silos: [SiloEvaluation(silo: "hospital-0", accuracy: 0.9, examples: 100, epsilonSpent: 1.2, epsilonCap: 5, personalisedAccuracy: nil),
                SiloEvaluation(silo: "hospital-1", accuracy: 0.8, examples: 100, epsilonSpent: 1.1, epsilonCap: 5, personalisedAccuracy: nil)],
        failures: ["hospital-2": "no evaluation by the deadline"])

    @Test("a final model that passes the plan's gate becomes the next registry version, with its file, lineage and the gate audited")
    func promotesPassingModel() async throws {
        let store = try await store()
        let file = try finalModel()
        let outcome = try await promotion(store).promote(try plan(gate: "{ min_accuracy: 0.8 }"), hash: "plan-1", round: 2, file: file,
                                                         participants: ["hospital-0", "hospital-1"], evaluations: Self.evaluations)
        #expect(outcome.gate.passed && outcome.version == 1)
        let version = try #require(try await store.modelVersions().last)
        #expect(version.planHash == "plan-1" && version.round == 2 && version.contentSHA256 == file.sha256 && version.createdAt == Self.noon)
        #expect(version.participants == ["hospital-0", "hospital-1"] && version.metrics["accuracy"] == 0.85 && version.epsilonPerSilo["hospital-1"] == 1.1)
        #expect(try await store.modelContent(sha256: file.sha256) == file.contents)
        let gated = try #require(try await store.auditRecords().first { $0.action == "model.gate" })
        guard case .modelGated(let record) = try AuditEvent(action: gated.action, payload: gated.payload) else {
            Issue.record("model.gate reads back as another event"); return
        }
        #expect(record.passed && record.minAccuracy == 0.8 && record.failures == ["hospital-2": "no evaluation by the deadline"])
        #expect(record.silos["hospital-0"]?.accuracy == 0.9 && gated.at == Self.noon)
    }

    @Test("a final model below the plan's gate is held back: audited with the reason, no version recorded")
    func holdsBackFailingModel() async throws {
        let store = try await store()
        let outcome = try await promotion(store).promote(try plan(gate: "{ min_accuracy: 0.95 }"), hash: "plan-1", round: 2, file: try finalModel(),
                                                         participants: ["hospital-0", "hospital-1"], evaluations: Self.evaluations)
        #expect(!outcome.gate.passed && outcome.version == nil && !outcome.gate.reasons.isEmpty)
        #expect(try await store.modelVersions().isEmpty)
        let gated = try #require(try await store.auditRecords().first { $0.action == "model.gate" })
        guard case .modelGated(let record) = try AuditEvent(action: gated.action, payload: gated.payload) else {
            Issue.record("model.gate reads back as another event"); return
        }
        #expect(!record.passed && record.reasons == outcome.gate.reasons)
    }

    // MARK: Plan recovery

    func recovery(_ store: any BrokerStore) -> PlanRecovery {
        PlanRecovery(store: store, brokerID: "broker", wallClock: Self.clock, fence: nil)
    }

    /// A plan run with round 1 committed (its checkpoint stored) and round 2 left `offered` by a broker that stopped.
    func interruptedRun(_ store: SQLiteLedger, yaml: String) async throws -> (PlanRun, Network) {
        let hash = "plan-interrupted"
        try await store.startPlanRun(PlanRun(planHash: hash, planYAML: yaml, submitter: "dana", state: .running, submittedAt: Self.noon, updatedAt: Self.noon),
                                     submission: .init(purpose: "research", rounds: 3, strategy: "fedavg"), actor: "dana")
        let inputs = Fixtures.data.featureNames.count
        let network = try Network(kind: .logistic, inputs: inputs, classes: 2, seed: 9)
        let file = try ModelPayload.modelFile(network, chunkBytes: 1 << 16)
        let standardisation = try BrokerCoordinator.Resume.encode(Standardisation(means: Array(repeating: 0.5, count: inputs),
                                                                                  scales: Array(repeating: 2, count: inputs)), classes: 2)
        for number in 1...2 {
            try await store.openRound(RoundRecord(planHash: hash, number: number, state: .planned, sampled: ["a", "b"], survivors: [],
                                                  deadline: Self.noon, updatedAt: Self.noon), actor: "broker")
            try await store.advanceRound(planHash: hash, number: number, to: .offered, survivors: [], at: Self.noon, actor: "broker")
        }
        try await store.advanceRound(planHash: hash, number: 1, to: .training, survivors: ["a", "b"], at: Self.noon, actor: "broker")
        try await store.advanceRound(planHash: hash, number: 1, to: .aggregating, survivors: ["a", "b"], at: Self.noon, actor: "broker")
        try await store.advanceRound(planHash: hash, number: 1, to: .evaluating, survivors: ["a", "b"], at: Self.noon, actor: "broker")
        try await store.commitRound(planHash: hash, number: 1, survivors: ["a", "b"],
                                    checkpoint: .init(round: 1, contentSHA256: file.sha256, standardisation: standardisation),
                                    content: file.contents, fence: nil, at: Self.noon, actor: "broker")
        return (try #require(try await store.planRuns().first { $0.planHash == hash }), network)
    }

    @Test("a run interrupted mid-round goes on after it: the round in flight aborted and audited, the checkpoint's model resumed")
    func recoversInterruptedRun() async throws {
        let store = try await store()
        let (run, network) = try await interruptedRun(store, yaml: Fixtures.plan(rounds: 3, quorum: 2))
        let found = try #require(try await recovery(store).recover(run))
        #expect(found.resume.nextRound == 3 && found.resume.lastCommitted == 1 && found.resume.participants == ["a", "b"])
        #expect(found.resume.global?.parameters == network.parameters)
        #expect(found.resume.standardisation?.scales.first == 2)
        #expect(found.status.rounds.map(\.state) == ["committed", "aborted"])
        #expect(found.status.rounds.last?.reason == "the broker stopped while the round was offered")
        #expect(try await store.rounds(planHash: run.planHash).map(\.state) == [.committed, .aborted])
        let actions = try await store.auditRecords().map(\.action)
        #expect(actions.suffix(2) == ["round.abort", "plan.resume"])
        #expect(try await store.auditRecords().last?.at == Self.noon)
    }

    @Test("a stored plan that no longer parses is not resumed: its run is recorded failed with the parser's reason")
    func unparseablePlanFails() async throws {
        let store = try await store()
        let (run, _) = try await interruptedRun(store, yaml: "purpose: [")
        #expect(try await recovery(store).recover(run) == nil)
        let after = try #require(try await store.planRuns().first { $0.planHash == run.planHash })
        #expect(after.state == .failed && after.reason?.hasPrefix("the stored plan no longer parses") == true)
    }

    @Test("a checkpoint whose model file is missing from the store stops recovery with a reason, not a crash")
    func missingCheckpointFile() async throws {
        let store = try await store()
        let (run, _) = try await interruptedRun(store, yaml: Fixtures.plan(rounds: 3, quorum: 2))
        var broken = run
        broken.checkpoint = .init(round: 1, contentSHA256: String(repeating: "0", count: 64), standardisation: run.checkpoint!.standardisation)
        await #expect(throws: BrokerError.self) { try await recovery(store).recover(broken) }
    }

    @Test("a resumed plan's poisoning tally is read back from its audit: this run's flags since it was submitted, not another plan's or an earlier run's")
    func attackTallyFromTheAudit() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        func flag(_ plan: String, _ round: Int, _ silo: String, after seconds: Double) async throws {
            try await store.audit(.attackFlagged(.init(plan: plan, round: round, kind: "excluded", reason: "left out by krum:1")),
                                  actor: "broker", subject: silo, at: Self.noon.addingTimeInterval(seconds))
        }
        try await flag("p", 1, "x", after: -60)
        try await flag("p", 1, "x", after: 1)
        try await flag("q", 2, "x", after: 2)
        try await flag("p", 2, "x", after: 3)
        try await flag("p", 2, "y", after: 3)
        let (watch, alerts) = BrokerCoordinator.attackWatch("p", since: Self.noon, alertAfter: 2, records: try await store.auditRecords())
        #expect(alerts.map(\.silo) == ["x"] && alerts.first?.rounds == [1, 2])
        #expect(watch.rounds == ["x": [1, 2], "y": [2]] && watch.alerted == ["x"])
    }
}
