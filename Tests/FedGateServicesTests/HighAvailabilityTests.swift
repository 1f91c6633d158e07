import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation
import Synchronization
import Testing
@testable import FedGateConsortiumTesting

/// Two broker processes on one PostgreSQL database: the leader holds the lease and serves, the
/// standby waits without listening; the leader is killed mid-plan and the standby takes over within
/// the lease time, finishing the plan from the store while the gateways find it on their own.
@Suite("High availability: two brokers on one PostgreSQL, a lease, a takeover")
struct HighAvailabilityTests {
    let processes = Processes()

    /// Leader, standby and three gateways that know both; a six-round plan submitted to the leader
    /// and followed until round 3 trains.
    struct Pair {
        let consortium: Consortium
        var leader: Processes.Running
        let port: Int
        let standby: Processes.Running
        let standbyPort: Int
        let gateways: [Processes.Running]
        let hash: String
        let store: PostgresLedger
        let url: String
        func stop() { ([leader, standby] + gateways).forEach { $0.signal(SIGCONT); $0.signal(SIGKILL) }; store.shutdown() }
    }

    /// The leader stops itself when round 3 trains (`FEDGATE_TESTING_CRASH_AT`, debug builds):
    /// `kill` with SIGKILL, `stop` with SIGSTOP.
    func pairInRoundThree(lease: Double, leader stop: String) async throws -> Pair? {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        guard let url = try await consortium.postgresURL() else { return nil }
        let (leader, port) = try await processes.startBroker(consortium, instance: "broker-a", store: url, leaseSeconds: lease,
                                                             environment: ["FEDGATE_TESTING_CRASH_AT": stop == "stop" ? "training:3:stop" : "training:3"],
                                                             log: "broker-a.log")
        try #require(port > 0, "\(leader.output)")
        let standbyPort = try Processes.freePort()
        let (standby, notYet) = try await processes.startBroker(consortium, port: standbyPort, instance: "broker-b", store: url, leaseSeconds: lease,
                                                                 log: "broker-b.log", within: 2 * lease)
        #expect(notYet == 0 && standby.output.contains("standing by"), "the standby must wait, not listen: \(standby.output)")

        let gateways = try await processes.startGateways(consortium, seed: 6, port: port, brokerStore: url) {
            $0.replacingOccurrences(of: "name: broker }", with: "name: broker, standbys: [\"127.0.0.1:\(standbyPort)\"] }")
        }
        let store = try PostgresLedger(url: url)
        var pair = Pair(consortium: consortium, leader: leader, port: port, standby: standby, standbyPort: standbyPort, gateways: gateways,
                        hash: "", store: store, url: url)
        await eventually { gateways.allConnected(port: port) }
        // The client runs alongside: rounds 1 and 2 may be over, and the leader gone, before it has
        // read the first offer's answers (it then ends with an error after the plan was taken).
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 6, deadline: 30)
        defer { submit.signal(SIGKILL) }
        pair = Pair(consortium: consortium, leader: leader, port: port, standby: standby, standbyPort: standbyPort, gateways: gateways,
                    hash: hash, store: store, url: url)
        let reached = await eventually(seconds: 120, every: .milliseconds(5)) { leader.output.contains("test \(stop == "stop" ? "pause" : "crash") point reached") }
        if !reached { pair.stop() }
        try #require(reached, "round 3 never trained: \(leader.output.suffix(2000))")
        #expect(await eventually(seconds: 30) { submit.output.contains("plan \(hash) submitted") }, "\(submit.output)")
        return pair
    }

    /// The plan finished on the standby from round 2's checkpoint: round 3 aborted, a version, the
    /// chain intact, the lease's two terms audited, the gateways on the standby, no reservation left.
    func checkFinishedOnStandby(_ p: Pair) async throws {
        let ended = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await p.store.planRuns().first { $0.planHash == p.hash }?.state) == .finished
        }
        try #require(ended, "the plan did not finish on the standby: \(p.standby.output.suffix(3000))")
        let rounds = try await p.store.rounds(planHash: p.hash)
        #expect(rounds.map(\.state) == [.committed, .committed, .aborted, .committed, .committed, .committed], "\(rounds.map { ($0.number, $0.state) })")
        #expect(try await p.store.modelVersions().contains { $0.planHash == p.hash && $0.round == 6 })
        let records = try await p.store.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        let leases = records.filter { $0.action == "broker.lease" }
        #expect(leases.map(\.actor) == ["broker-a", "broker-b"] && leases.last?.payload.contains("\"term\":2") == true, "\(leases.map(\.payload))")
        #expect(p.gateways.allConnected(port: p.standbyPort), "the gateways found the new leader: \(p.gateways.map { $0.output.suffix(500) })")
        for i in 0..<3 {
            let ledger = try SQLiteLedger(path: p.consortium.file("hospital-\(i).sqlite").path)
            let entries = try await ledger.entries(dataset: "breast-cancer-2024")
            #expect(!entries.contains { $0.state == .reserved }, "hospital-\(i): \(entries.map { ($0.round, $0.state) })")
        }
    }

    @Test("the leader is killed in round 3 of 6: the standby leads within the lease time (3 s), aborts the round in flight and finishes the plan; the gateways reconnect to it; the old leader comes back as a standby")
    func standbyTakesOver() async throws {
        let lease = 3.0
        guard var p = try await pairInRoundThree(lease: lease, leader: "kill") else { return }
        defer { p.stop() }
        _ = await p.leader.exit(within: 10)
        let killed = Date()
        let takeover = await p.standby.listeningPort(within: 4 * lease)
        let after = Date().timeIntervalSince(killed)
        #expect(takeover == p.standbyPort, "the standby did not take over: \(p.standby.output.suffix(2000))")
        // Within the lease's lapse, plus the standby's poll (a quarter of the lease) and its start.
        #expect(after < lease + lease / 4 + 1.5, "took over \(after) s after the kill (lease \(lease) s)")
        try await checkFinishedOnStandby(p)

        // The old leader, restarted, finds the lease taken and stands by.
        (p.leader, _) = try await processes.startBroker(p.consortium, port: p.port, instance: "broker-a", store: p.url, leaseSeconds: lease,
                                                        log: "broker-a-again.log", within: 2 * lease)
        #expect(p.leader.output.contains("standing by") && !p.leader.output.contains("listening on"), "\(p.leader.output)")
    }

    @Test("the leader freezes (SIGSTOP) in round 3: the standby takes over, the gateways leave the frozen broker on keepalive and finish the plan on the standby; thawed, the old leader finds its lease taken and stops, and its stale writes are fenced off")
    func frozenLeaderIsFenced() async throws {
        let lease = 3.0
        guard let p = try await pairInRoundThree(lease: lease, leader: "stop") else { return }
        defer { p.stop() }
        #expect(await p.standby.listeningPort(within: 4 * lease) == p.standbyPort, "\(p.standby.output.suffix(2000))")
        try await checkFinishedOnStandby(p)

        p.leader.signal(SIGCONT)
        let status = await p.leader.exit(within: 4 * lease)
        #expect(status != nil && status != 0, "the thawed leader must stop serving: \(p.leader.output.suffix(2000))")
        #expect(p.leader.output.contains("another broker took the 'broker' lease"), "\(p.leader.output.suffix(2000))")
        // Whatever the old leader tried on waking, the plan stays finished and the chain intact.
        #expect(try await p.store.planRuns().first { $0.planHash == p.hash }?.state == .finished)
        let records = try await p.store.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        #expect(!records.contains { $0.action == "plan.failed" })
    }

    @Test("PostgreSQL restarted (fast shutdown, down 2 s) under a broker in round 3 of 10: the broker waits for it and goes on; every round but the one in flight commits, nothing is lost, the chain verifies")
    func postgresRestartUnderBroker() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        guard let pg = try PrivatePostgres.make(port: try Processes.freePort()) else { return }
        defer { pg.remove() }
        let consortium = try Consortium()
        // The broker freezes itself when round 3 trains; a watching thread takes the database down
        // while it is frozen and thaws it at once, so the outage lands in the middle of a round
        // whatever the machine's load.
        let (broker, port) = try await processes.startBroker(consortium, store: pg.url, environment: ["FEDGATE_TESTING_CRASH_AT": "training:3:stop"])
        defer { broker.signal(SIGCONT); broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let gateways = try await processes.startGateways(consortium, seed: 8, port: port, brokerStore: pg.url)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 10, deadline: 60)
        defer { submit.signal(SIGKILL) }
        let store = try PostgresLedger(url: pg.url)
        defer { store.shutdown() }
        let stopping = Mutex<String?>(nil)
        let outage = broker.onPause(1) {
            do { try pg.stop() } catch { stopping.withLock { $0 = "\(error)" } }
        }
        try #require(await outage.wait() != nil, "round 3 never trained: \(broker.output.suffix(2000))")
        try #require(stopping.withLock { $0 } == nil, "PostgreSQL did not stop: \(stopping.withLock { $0 ?? "" })")
        try await Task.sleep(for: .seconds(2))
        try pg.start()
        let ended = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await store.planRuns().first { $0.planHash == hash }?.state) != .running
        }
        try #require(ended, "\(broker.output.suffix(3000))")
        #expect(try await store.planRuns().first { $0.planHash == hash }?.state == .finished)
        // The broker met the outage (its connection pool saw the server go and waited for it, or a
        // transaction cut short was retried) and rode it out.
        #expect(broker.output.contains("57P0") || broker.output.contains("connectionError") || broker.output.contains("the store cannot be reached"),
                "the broker never met the outage: \(broker.output.suffix(2000))")
        // Round 3 (in flight during the outage) commits, or, if the broker stayed frozen long enough for
        // the gateways to leave it (a slow `pg_ctl stop` on a loaded machine), aborts; every other commits.
        let rounds = try await store.rounds(planHash: hash)
        #expect(rounds.count == 10 && rounds.allSatisfy { $0.state == .committed || ($0.number == 3 && $0.state == .aborted) },
                "\(rounds.map { ($0.number, $0.state) })")
        let records = try await store.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        #expect(records.filter { $0.action == "round.committed" && $0.subject == hash }.count == rounds.filter { $0.state == .committed }.count)
        #expect(try await store.modelVersions().contains { $0.planHash == hash && $0.round == 10 })
        #expect(broker.process.isRunning, "the broker rode out the restart")
    }

    @Test("a broker frozen (SIGSTOP) for more than twice its lease, with no standby: on waking it renews the lease under the same term, keeps serving and finishes the plan")
    func frozenPastLeaseWithoutStandby() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        // Lease 1.5 s; frozen 3.5 s in round 2's training (the watcher thread sleeps, then thaws it):
        // more than twice the lease, and well inside the gateways' keepalive (a ping unanswered for
        // 5 s drops the connection; a 5 s freeze on a loaded machine dropped one and aborted the
        // round). The silence detector is set far off so that the gateways stay through the freeze.
        let (broker, port) = try await processes.startBroker(consortium, leaseSeconds: 1.5, silentAfter: 60,
                                                             environment: ["FEDGATE_TESTING_CRASH_AT": "training:2:stop"])
        defer { broker.signal(SIGCONT); broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let frozen = broker.onPause(1) { usleep(3_500_000) }
        let gateways = try await processes.startGateways(consortium, seed: 12, port: port)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 4, deadline: 30)
        defer { submit.signal(SIGKILL) }
        try #require(await frozen.wait() != nil, "round 2 never trained: \(broker.output.suffix(2000))")
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        let ended = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await store.planRuns().first { $0.planHash == hash }?.state) != .running
        }
        try #require(ended, "the plan did not end: \(broker.output.suffix(3000))")
        #expect(try await store.planRuns().first { $0.planHash == hash }?.state == .finished, "\(broker.output.suffix(2000))")
        let rounds = try await store.rounds(planHash: hash)
        #expect(rounds.count == 4 && rounds.allSatisfy { $0.state == .committed }, "\(rounds.map { ($0.number, $0.state) })")
        #expect(broker.process.isRunning && !broker.output.contains("lease lost"), "\(broker.output.suffix(2000))")
        let leases = try await store.auditRecords().filter { $0.action == "broker.lease" }
        #expect(leases.count == 1 && leases[0].payload.contains("\"term\":1"), "one term throughout: \(leases.map(\.payload))")
    }
}
