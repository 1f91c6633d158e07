import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation
import Testing

/// Two broker processes on one PostgreSQL database: the leader holds the lease and serves, the
/// standby waits without listening; the leader is killed mid-plan and the standby takes over within
/// the lease time, finishing the plan from the store while the gateways find it on their own.
@Suite("High availability: two brokers on one PostgreSQL, a lease, a takeover")
struct HighAvailabilityTests {
    let processes = ProcessRoundTests()

    /// A TCP port free right now on loopback (for the standby, which does not listen until it leads).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("the leader is killed in round 3 of 6: the standby leads within the lease time (3 s), aborts the round in flight and finishes the plan; the gateways reconnect to it; the old leader comes back as a standby")
    func standbyTakesOver() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: ProcessRoundTests.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        guard let url = try await consortium.postgresURL() else { return }
        let lease = 3.0
        var (leader, port) = try await processes.startBroker(consortium, instance: "broker-a", store: url, leaseSeconds: lease, log: "broker-a.log")
        defer { leader.signal(SIGKILL) }
        try #require(port > 0, "\(leader.output)")
        let standbyPort = try Self.freePort()
        let (standby, notYet) = try await processes.startBroker(consortium, port: standbyPort, instance: "broker-b", store: url, leaseSeconds: lease,
                                                                 log: "broker-b.log", within: 2 * lease)
        defer { standby.signal(SIGKILL) }
        #expect(notYet == 0 && standby.output.contains("standing by"), "the standby must wait, not listen: \(standby.output)")

        var gateways: [ProcessRoundTests.Running] = []
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        for (i, shard) in try NetworkedRoundTests.simulation(seed: 6).shards().enumerated() {
            let config = try await processes.gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, port: port)
            let text = try String(contentsOf: config, encoding: .utf8)
                .replacingOccurrences(of: "name: broker }", with: "name: broker, standbys: [\"127.0.0.1:\(standbyPort)\"] }")
            try text.write(to: config, atomically: true, encoding: .utf8)
            gateways.append(try .init(["gateway", "run", "--config", config.path], log: consortium.file("hospital-\(i).log")))
        }
        await eventually { leader.output.components(separatedBy: "gateway connected").count - 1 >= 3 }

        _ = try consortium.credentials("dana", .dataScientist)
        let text = NetworkedRoundTests.plan(rounds: 6, quorum: 3, deadline: 30)
        try text.write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let hash = try TrainingPlan.parse(text, file: "plan.yaml").contentHash
        let submitted = try await processes.fedgate(["plan", "submit", consortium.file("plan.yaml").path, "--broker", "127.0.0.1:\(port)",
                                                     "--cert", consortium.file("dana.pem").path, "--key", consortium.file("dana.key").path,
                                                     "--ca", consortium.file("ca.pem").path], consortium, log: "submit.log")
        #expect(submitted.status == 0, "\(submitted.output)")

        let store = try PostgresLedger(url: url)
        defer { store.shutdown() }
        let reached = await eventually(seconds: 120, every: .milliseconds(5)) {
            (try? await store.rounds(planHash: hash).contains { $0.number == 3 && $0.state == .training }) ?? false
        }
        try #require(reached, "round 3 never trained: \(leader.output.suffix(2000))")
        leader.signal(SIGKILL)
        let killed = Date()
        _ = await leader.exit(within: 10)
        let takeover = await standby.listeningPort(within: 4 * lease)
        let after = Date().timeIntervalSince(killed)
        #expect(takeover == standbyPort, "the standby did not take over: \(standby.output.suffix(2000))")
        // Within the lease's lapse, plus the standby's poll (a quarter of the lease) and its start.
        #expect(after < lease + lease / 4 + 1.5, "took over \(after) s after the kill (lease \(lease) s)")

        let ended = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await store.planRuns().first { $0.planHash == hash }?.state) == .finished
        }
        try #require(ended, "the plan did not finish on the standby: \(standby.output.suffix(3000))")
        let rounds = try await store.rounds(planHash: hash)
        #expect(rounds.map(\.state) == [.committed, .committed, .aborted, .committed, .committed, .committed], "\(rounds.map { ($0.number, $0.state) })")
        #expect(try await store.modelVersions().contains { $0.planHash == hash && $0.round == 6 })
        let records = try await store.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        let leases = records.filter { $0.action == "broker.lease" }
        #expect(leases.map(\.actor) == ["broker-a", "broker-b"] && leases.last?.payload.contains("\"term\":2") == true, "\(leases.map(\.payload))")
        #expect(standby.output.components(separatedBy: "gateway connected").count - 1 >= 3, "the gateways found the new leader")
        for i in 0..<3 {
            let ledger = try SQLiteLedger(path: consortium.file("hospital-\(i).sqlite").path)
            let entries = try await ledger.entries(dataset: "breast-cancer-2024")
            #expect(!entries.contains { $0.state == .reserved }, "hospital-\(i): \(entries.map { ($0.round, $0.state) })")
        }

        // The old leader, restarted, finds the lease taken and stands by.
        (leader, _) = try await processes.startBroker(consortium, port: port, instance: "broker-a", store: url, leaseSeconds: lease,
                                                      log: "broker-a-again.log", within: 2 * lease)
        #expect(leader.output.contains("standing by") && !leader.output.contains("listening on"), "\(leader.output)")
    }
}
