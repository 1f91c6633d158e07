import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// The broker as a real process, killed with SIGKILL at each phase of a round (debug builds stop
/// themselves at an exact phase with `FEDGATE_TESTING_CRASH_AT=phase:round`), restarted on the same
/// store and port while three gateway processes keep running: the plan goes on from its last
/// checkpoint, the round in flight is aborted, no silo is left with a reservation or charged twice,
/// and every audit chain verifies.
@Suite("Crash recovery: the broker killed at each phase, restarted on its store", .serialized)
struct CrashRecoveryTests {
    let processes = Processes()

    struct Aftermath {
        let consortium: Consortium
        let hash: String
        let rounds: [RoundRecord]
        let broker: SQLiteLedger
        let restarts: Int
    }

    /// Runs `plan` with the broker killed at each of `crashes` in turn (each restart arms the next).
    func survive(_ crashes: [String], plan text: String) async throws -> Aftermath {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        var (broker, port) = try await processes.startBroker(consortium, environment: ["FEDGATE_TESTING_CRASH_AT": crashes[0]])
        try #require(port > 0, "the broker did not start: \(broker.output)")
        defer { broker.signal(SIGKILL) }
        let gateways = try await processes.startGateways(consortium, seed: 3, port: port)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        try text.write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let hash = try TrainingPlan.parse(text, file: "plan.yaml").contentHash
        // The submitting command may see the broker die under it (the first crash can come before it returns).
        _ = try await processes.fedgate(["plan", "submit", consortium.file("plan.yaml").path] + processes.scientist(consortium, port: port), consortium, log: "submit.log", within: 60)
        for (i, crash) in crashes.enumerated() {
            let status = await broker.exit(within: 90)
            try #require(status != nil, "the broker did not reach \(crash): \(broker.output.suffix(2000))")
            #expect(broker.process.terminationReason == .uncaughtSignal && status == SIGKILL, "\(crash): \(broker.output.suffix(1000))")
            #expect(broker.output.contains("test crash point reached"), "\(crash)")
            let next = i + 1 < crashes.count ? ["FEDGATE_TESTING_CRASH_AT": crashes[i + 1]] : [:]
            let restarted = try await processes.startBroker(consortium, port: port, environment: next, log: "broker-\(i + 1).log")
            broker = restarted.0
            try #require(restarted.1 == port, "the broker did not restart after \(crash): \(broker.output.suffix(2000))")
        }
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        let ended = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await store.planRuns().first { $0.planHash == hash }?.state) != .running
        }
        try #require(ended, "the plan did not finish: \(broker.output.suffix(3000))")
        for g in gateways { g.signal(SIGTERM) }
        broker.signal(SIGTERM)
        for g in gateways { #expect(await g.exit(within: 10) == 0, "\(g.output.suffix(1500))") }
        #expect(await broker.exit(within: 10) == 0, "\(broker.output.suffix(1500))")
        return Aftermath(consortium: consortium, hash: hash, rounds: try await store.rounds(planHash: hash), broker: store, restarts: crashes.count)
    }

    /// What must hold after any crash: the plan finished with a registered version, each round
    /// aborted by a restart says the phase it was in, no silo holds a reservation or has two
    /// commitments for one round, every committed round's survivors paid for it, and every chain verifies.
    func check(_ a: Aftermath, abortedIn phases: [String], committed: [Int]) async throws {
        let run = try #require(try await a.broker.planRuns().first { $0.planHash == a.hash })
        #expect(run.state == .finished, "\(run)")
        #expect(a.rounds.filter { $0.state == .committed }.map(\.number) == committed, "\(a.rounds.map { ($0.number, $0.state) })")
        let records = try await a.broker.auditRecords()
        let reasons = records.filter { $0.action == "round.abort" && $0.subject == a.hash }.map(\.payload)
        for phase in phases {
            #expect(reasons.contains { $0.contains("the broker stopped while the round was \(phase)") }, "\(phase): \(reasons)")
        }
        #expect(records.filter { $0.action == "plan.resume" }.count == a.restarts)
        let versions = try await a.broker.modelVersions().filter { $0.planHash == a.hash }
        #expect(versions.count == 1 && versions.first?.round == committed.last, "\(versions)")
        #expect(AuditVerification.verify(records) == .intact(records: records.count))

        for i in 0..<3 {
            let silo = "hospital-\(i)"
            let ledger = try SQLiteLedger(path: a.consortium.file("\(silo).sqlite").path)
            let entries = try await ledger.entries(dataset: "breast-cancer-2024").filter { $0.planHash == a.hash }
            #expect(!entries.contains { $0.state == .reserved }, "\(silo) holds a reservation: \(entries.map { ($0.round, $0.state) })")
            let paid = entries.filter { $0.state == .committed }.map(\.round)
            #expect(Set(paid).count == paid.count, "\(silo) paid twice for a round: \(paid)")
            for r in a.rounds where r.state == .committed && r.survivors.contains(silo) {
                #expect(paid.contains(r.number), "\(silo) took part in committed round \(r.number) without a committed ledger entry: \(paid)")
            }
            let chain = try await ledger.auditRecords()
            #expect(AuditVerification.verify(chain) == .intact(records: chain.count), "\(silo)")
        }
    }

    @Test("FedAvg: killed when the round was offered, training, aggregating, evaluating, just committed, and in the final evaluation; the plan finishes from its checkpoints")
    func fedAvgPhases() async throws {
        let crashes = ["offered:1", "training:2", "aggregating:3", "evaluating:4", "committed:5", "final-evaluation:6"]
        let a = try await survive(crashes, plan: Fixtures.plan(rounds: 6, quorum: 3, deadline: 30))
        try await check(a, abortedIn: ["offered", "training", "aggregating", "evaluating"], committed: [5, 6])
    }

    @Test("secure aggregation: killed while keys were advertised, shares relayed, masked inputs collected and unmasking asked; the plan finishes")
    func secureAggregationPhases() async throws {
        let crashes = ["advertising:1", "sharing:2", "masking:3", "unmasking:4"]
        let a = try await survive(crashes, plan: Fixtures.plan(rounds: 5, quorum: 3, deadline: 30, secure: true))
        try await check(a, abortedIn: ["training", "training", "training", "training"], committed: [5])
    }

    /// A gateway (hospital-2) killed at `phases` in turn, one plan each (quorum 2), restarted after
    /// each: every plan completes on the other two; what the killed silo reserved but never sent is
    /// released when it restarts, what it sent stays committed once; then it rejoins a plan that
    /// needs all three.
    func gatewayCrashes(_ phases: [String], secure: Bool) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "the broker did not start: \(broker.output)")
        var configs: [URL] = []
        for (i, shard) in try Fixtures.simulation(seed: 7).shards().enumerated() {
            configs.append(try await processes.gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, port: port))
        }
        func start(_ i: Int, crash: String?, log: String) throws -> Processes.Running {
            try .init(["gateway", "run", "--config", configs[i].path], log: consortium.file(log),
                      environment: crash.map { ["FEDGATE_TESTING_GATEWAY_CRASH_AT": $0] } ?? [:])
        }
        var gateways = [try start(0, crash: nil, log: "hospital-0.log"), try start(1, crash: nil, log: "hospital-1.log"),
                        try start(2, crash: phases[0], log: "hospital-2.log")]
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        let client = try processes.scientist(consortium, port: port)
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        let ledger = try SQLiteLedger(path: consortium.file("hospital-2.sqlite").path)
        func run(_ text: String, log: String) async throws -> String {
            try text.write(to: consortium.file("\(log).yaml"), atomically: true, encoding: .utf8)
            let hash = try TrainingPlan.parse(text, file: log).contentHash
            _ = try await processes.fedgate(["plan", "submit", consortium.file("\(log).yaml").path] + client, consortium, log: "\(log).log")
            return hash
        }
        func finished(_ hash: String) async -> Bool {
            await eventually(seconds: 120, every: .milliseconds(50)) { (try? await store.planRuns().first { $0.planHash == hash }?.state) == .finished }
        }

        for (i, phase) in phases.enumerated() {
            let hash = try await run(Fixtures.plan(rounds: 2 + i, quorum: 2, deadline: 30, secure: secure), log: "plan-\(i)")
            let status = await gateways[2].exit(within: 120)
            try #require(status != nil, "hospital-2 never reached \(phase): \(gateways[2].output.suffix(2000))")
            #expect(status == SIGKILL && gateways[2].output.contains("test crash point reached"), "\(phase)")
            try #require(await finished(hash), "the plan went on without hospital-2 killed at \(phase)? \(broker.output.suffix(2000))")
            let rounds = try await store.rounds(planHash: hash)
            #expect(rounds.count == 2 + i && rounds.allSatisfy { $0.state == .committed }, "\(phase): \(rounds.map { ($0.number, $0.state) })")
            // Restarted (armed for the next phase): what it reserved and never sent is released at start.
            gateways[2] = try start(2, crash: i + 1 < phases.count ? phases[i + 1] : nil, log: "hospital-2-\(i + 1).log")
            #expect(await eventually { gateways[2].connections() >= 1 }, "hospital-2 did not reconnect after \(phase)")
            let entries = try await ledger.entries(dataset: "breast-cancer-2024").filter { $0.planHash == hash }
            #expect(!entries.contains { $0.state == .reserved }, "\(phase): \(entries.map { ($0.round, $0.state) })")
            let paid = entries.filter { $0.state == .committed }.map(\.round)
            #expect(Set(paid).count == paid.count, "\(phase): paid twice \(paid)")
            let counted = rounds.filter { $0.survivors.contains("hospital-2") }.map(\.number)
            for r in counted { #expect(paid.contains(r), "\(phase): counted in round \(r) without paying for it: \(paid)") }
            if ["reserved", "training", "advertised", "shared"].contains(phase) {
                #expect(!paid.contains(1) && !counted.contains(1), "\(phase): nothing left the silo in round 1, nothing is spent: \(paid)")
            }
        }
        // It rejoins: a plan that needs all three runs with it.
        let all = try await run(Fixtures.plan(rounds: 1, quorum: 3, deadline: 30, secure: secure), log: "plan-all")
        #expect(await finished(all))
        #expect(try await store.rounds(planHash: all).first?.survivors.count == 3)
        for name in ["broker", "hospital-2"] {
            let chain = try await SQLiteLedger(path: consortium.file("\(name).sqlite").path).auditRecords()
            #expect(AuditVerification.verify(chain) == .intact(records: chain.count), "\(name)")
        }
    }

    @Test("a gateway killed after reserving its budget, while training and after uploading: each plan completes on quorum, nothing unsent stays reserved, the silo rejoins")
    func gatewayKilledInEachPhase() async throws {
        try await gatewayCrashes(["reserved", "training", "uploaded"], secure: false)
    }

    @Test("under secure aggregation, a gateway killed after advertising keys, after sharing them, after its masked upload and when asked to unmask: masks are recovered from the others' shares and each round commits; the silo rejoins")
    func gatewayKilledInEachSecurePhase() async throws {
        try await gatewayCrashes(["advertised", "shared", "masked", "unmasking"], secure: true)
    }
}
