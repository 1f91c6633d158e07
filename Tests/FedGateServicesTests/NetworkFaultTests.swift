import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// Broker and gateways as processes with a faulty network between them (`FaultyNetwork`, a proxy
/// on loopback the test controls): slow links, a network that swallows everything mid-round, and
/// every connection cut at once. Rounds finish or end at their deadlines; nothing waits past one.
@Suite("A network that delays, drops and cuts")
struct NetworkFaultTests {
    let processes = Processes()

    @Test("links delayed 100 ms each way, then silent (all bytes dropped) in round 2, then every connection cut in the next round that trains: each round commits or ends at its 6 s deadline, the gateways come back, the plan finishes, nothing stays reserved")
    func delaysDropsAndCuts() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        // The broker's own silence detector is set far off, so that round deadlines govern.
        // It also freezes itself whenever rounds 2 to 5 train, and a watching thread turns the
        // network bad at those exact moments and thaws it, whatever the machine's load. A round
        // trains only when all three gateways accepted it (quorum 3), so the first round after 2
        // that trains is one the gateways came back for: on a loaded machine their reconnection can
        // take rounds 3 and 4 (offered to streams the silent network left dead), so the cut goes
        // to whichever round trains first, and the later pauses just thaw the broker.
        let (broker, port) = try await processes.startBroker(consortium, silentAfter: 60, environment: [
            "FEDGATE_TESTING_CRASH_AT": "training:2:stop,training:3:stop,training:4:stop,training:5:stop"])
        defer { broker.signal(SIGCONT); broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let network = try FaultyNetwork(to: port)
        defer { network.stop() }
        network.mode = .delay(milliseconds: 100)
        let silence = broker.onPause(1) { network.mode = .blackhole }
        let cut = Recorder<Int>()
        let pauses = (2...4).map { n in
            broker.onPause(n) {
                // Only once the network healed (the test sets it back to pass): a round trained
                // before that is one the silence did not reach.
                guard network.mode == .pass, cut.all.isEmpty else { return }
                network.cutAll()
                cut.add(n)
            }
        }
        let gateways = try await processes.startGateways(consortium, seed: 10, port: network.port)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        /// What the broker and each gateway said last, for a failure's message.
        func logs() -> String {
            (["broker: " + broker.output] + gateways.enumerated().map { "hospital-\($0): " + $1.output })
                .map { $0.split(separator: "\n").filter { !$0.contains(" debug ") && !$0.contains(" trace ") }.suffix(12).joined(separator: "\n") }
                .joined(separator: "\n---\n")
        }
        await eventually { gateways.allConnected() }
        let deadline = 6.0
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 6, deadline: Int(deadline))
        defer { submit.signal(SIGKILL) }
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        func round(_ n: Int) async -> RoundRecord? { try? await store.rounds(planHash: hash).first { $0.number == n } }

        // Slow links: round 1 still commits.
        #expect(await eventually(seconds: 60, every: .milliseconds(20)) { await round(1)?.state == .committed }, "\(logs())")
        // Silence in round 2's training: the broker ends the round at its deadline, not later (its
        // own record and the watcher's clock: the test's task pool may be slow to look).
        let silenced = try #require(await silence.wait(), "round 2 never trained: \(logs())")
        let aborted = await eventually(seconds: deadline + 10, every: .milliseconds(50)) { await round(2)?.state == .aborted }
        let second = await round(2)
        #expect(aborted, "round 2 outlived its deadline: \(String(describing: second))")
        if let second {
            let ended = second.updatedAt.timeIntervalSince(silenced)
            #expect(ended <= deadline + 1.5, "round 2 ended \(ended) s after the network went silent (deadline \(deadline) s)")
            #expect(abs(second.updatedAt.timeIntervalSince(second.deadline)) <= 1.5, "round 2 ended at its deadline, not before or long after: \(second)")
        }
        network.mode = .pass
        // The gateways notice the dead connections (keepalive; a handshake the silence swallowed, by
        // their connect timeout) and come back through the healed network.
        #expect(await eventually(seconds: 40) { gateways.allSatisfy { $0.connections() >= 2 } }, "gateways did not reconnect: \(logs())")

        // Every connection cut during the next round's training: that round ends, the next ones go on.
        let cutIn = await eventually(seconds: 180, every: .milliseconds(20)) { !cut.all.isEmpty }
        try #require(cutIn, "no round trained after the network healed: \(logs()); pauses thawed: \(pauses.map { $0.acted.withLock { $0 } })")
        let finished = await eventually(seconds: 120, every: .milliseconds(100)) {
            (try? await store.planRuns().first { $0.planHash == hash }?.state) != .running
        }
        try #require(finished, "the plan did not finish: \(logs())")
        let rounds = try await store.rounds(planHash: hash)
        #expect(rounds.count == 6 && rounds.allSatisfy { $0.state == .committed || $0.state == .aborted }, "\(rounds.map { ($0.number, $0.state) })")
        #expect(rounds.last?.state == .committed, "the last round, after the faults, commits: \(rounds.map { ($0.number, $0.state) })\n\(logs())")
        for r in rounds where r.state == .aborted {
            #expect(r.updatedAt.timeIntervalSince(r.deadline) <= 1.5, "round \(r.number) ended \(r.updatedAt.timeIntervalSince(r.deadline)) s past its deadline")
        }
        if let run = try await store.planRuns().first(where: { $0.planHash == hash }) {
            let took = run.updatedAt.timeIntervalSince(run.submittedAt)
            #expect(took < 6 * deadline + 60, "the plan took \(took) s")
        }
        // Settling a round's reservations may lag its end by the gateways' reconnection: wait for it.
        for i in 0..<3 {
            let ledger = try SQLiteLedger(path: consortium.file("hospital-\(i).sqlite").path)
            let settled = await eventually(seconds: 30) {
                (try? await ledger.entries(dataset: "breast-cancer-2024").contains { $0.state == .reserved }) == false
            }
            let held = (try? await ledger.entries(dataset: "breast-cancer-2024").map { ($0.round, $0.state) }) ?? []
            #expect(settled, "hospital-\(i) holds a reservation: \(held)")
        }
        let chain = try await store.auditRecords()
        #expect(AuditVerification.verify(chain) == .intact(records: chain.count))
    }

    /// A broker, and in front of it a tarpit: a network that accepts connections and swallows every byte.
    func brokerBehindTarpit() async throws -> (Consortium, Processes.Running, Int, FaultyNetwork) {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        guard port > 0 else {
            broker.signal(SIGKILL)
            throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "the broker did not start: \(broker.output)"])
        }
        let tarpit = try FaultyNetwork(to: port)
        tarpit.mode = .blackhole
        return (consortium, broker, port, tarpit)
    }

    @Test("a broker that accepts the connection and never answers (the handshake swallowed): the gateway gives up on it within its connect timeout and connects to the next broker in its list")
    func silentBrokerIsLeftForTheNext() async throws {
        let (consortium, broker, port, tarpit) = try await brokerBehindTarpit()
        defer { broker.signal(SIGKILL); tarpit.stop() }
        let config = try await processes.gatewayConfig(consortium, "hospital-0", shard: try Fixtures.simulation(seed: 3).shards()[0].train,
                                                       port: tarpit.port)
        let text = try String(contentsOf: config, encoding: .utf8).replacingOccurrences(
            of: "name: broker }", with: "name: broker, standbys: [\"127.0.0.1:\(port)\"], connect_timeout_seconds: 2 }")
        try text.write(to: config, atomically: true, encoding: .utf8)
        let gateway = try Processes.Running(["gateway", "run", "--config", config.path], log: consortium.file("hospital-0.log"))
        defer { gateway.signal(SIGKILL) }
        let connected = await eventually(seconds: 30, every: .milliseconds(50)) { gateway.connections(port: port) >= 1 }
        #expect(connected, "the gateway never reached the answering broker: \(gateway.output.suffix(2000))")
        #expect(gateway.output.contains("no welcome from the broker at 127.0.0.1:\(tarpit.port) within 2"), "\(gateway.output.suffix(2000))")
    }

    @Test("a person's command against a broker that accepts the connection and never answers fails at its --timeout, saying so, instead of hanging")
    func commandAgainstSilentBrokerTimesOut() async throws {
        let (consortium, broker, port, tarpit) = try await brokerBehindTarpit()
        defer { broker.signal(SIGKILL); tarpit.stop() }
        let started = ContinuousClock.now
        let run = try await processes.fedgate(["plan", "status", String(repeating: "a", count: 64), "--timeout", "2"]
                                              + processes.scientist(consortium, port: tarpit.port), consortium, log: "status.log", within: 60)
        #expect(run.status != nil && run.status != 0, "\(run.output)")
        #expect(run.output.contains("did not answer within 2.0 s"), "\(run.output)")
        #expect(ContinuousClock.now - started < .seconds(30), "the command took \(ContinuousClock.now - started)")
        // The same command through an answering path is not held back by the option.
        let direct = try await processes.fedgate(["plan", "status", String(repeating: "a", count: 64), "--timeout", "2"]
                                                 + processes.scientist(consortium, port: port), consortium, log: "status-direct.log", within: 60)
        #expect(direct.output.contains("notFound") || direct.output.contains("no plan"), "\(direct.output)")
    }
}
