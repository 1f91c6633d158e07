import FedGateLearning
import FedGatePolicy
import FedGateRounds
import FedGatePrivacy
@testable import FedGateServices
import FedGateSimulation
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// Networked plans that ask for more than FedAvg of float32 updates: FedProx's proximal term in each
/// silo's DP-SGD, and an update codec between the silos and the broker.
@Suite("Networked plans with FedProx and an update codec, on non-IID digits")
struct PlanShapeTests {
    static let silos = (0..<5).map { "lab-\($0)" }

    /// The simulator's run of the same consortium: five silos, Dirichlet(0.5) label skew, softmax,
    /// DP-SGD as the plan states it, the statistics release, the run's repeatable noise.
    static func simulation(seed: UInt64, rounds: Int, fedprox: Double?, scaffold: Bool = false) throws -> FederatedSimulation {
        var s = FederatedSimulation.Settings()
        s.silos = silos.count
        s.partitioning = .dirichlet(alpha: 0.5)
        s.model = .softmax
        s.rounds = rounds
        s.seed = seed
        s.local.learningRate = 0.5
        s.local.dp = try DPSGDSettings(noiseMultiplier: 1.0, clipNorm: 1, samplingRate: 0.1)
        s.local.proxMu = Float(fedprox ?? 0)
        s.scaffold = scaffold
        s.fixedNoiseSeed = seed
        s.statistics = try StatisticsRelease(ranges: DigitsSilos.digits.featureNames.map { _ in .init(lower: 0, upper: 16) },
                                             noiseMultiplier: DigitsSilos.statisticsNoise)
        return try FederatedSimulation(data: DigitsSilos.digits, settings: s)
    }

    /// Runs each plan in turn on the shards' five gateways (repeatable noise from `seed`); their final statuses.
    static func run(_ plans: [String], shards: [(train: Dataset, test: Dataset)], seed: UInt64,
                    policyExtra: [String: String] = [:]) async throws -> [BrokerCoordinator.PlanStatus] {
        try await withLabs(shards, seed: seed, policyExtra: policyExtra) { consortium, _, broker, _ in
            var statuses: [BrokerCoordinator.PlanStatus] = []
            for plan in plans {
                let hash = try await NetworkedRoundTests.submit(plan, consortium, port: broker.port)
                statuses.append(try #require(await broker.coordinator.finished(hash)))
            }
            return statuses
        }
    }

    /// The five labs' gateways on the shards (repeatable noise from `seed`, each with its policy's
    /// extra lines), connected to a broker on its own store, for `body`.
    static func withLabs<R: Sendable>(_ shards: [(train: Dataset, test: Dataset)], seed: UInt64, policyExtra: [String: String] = [:],
                                      settings: BrokerCoordinator.Settings = .init(),
                                      _ body: @escaping @Sendable (Consortium, SQLiteLedger, BrokerHandle, [Gateway]) async throws -> R) async throws -> R {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        return try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                          settings: settings, logger: consortium.logger) { broker in
            var gateways: [Gateway] = []
            for (i, shard) in shards.enumerated() {
                gateways.append(try await DigitsSilos.gateway(silos[i], shard, consortium, brokerStore, port: broker.port, fixedNoise: (seed, i),
                                                              policyExtra: policyExtra[silos[i]] ?? ""))
            }
            let running = gateways.map { g in Task { await g.run() } }
            defer { running.forEach { $0.cancel() } }
            let coordinator = broker.coordinator
            await eventually { await coordinator.connectedSilos.count >= silos.count }
            return try await body(consortium, brokerStore, broker, gateways)
        }
    }

    @Test("a FedProx plan (μ = 0.1) on label-skewed digits reaches its simulator's accuracy within a point, and its model is not FedAvg's")
    func fedproxMatchesTheSimulator() async throws {
        let simulation = try Self.simulation(seed: 0, rounds: 8, fedprox: 0.1)
        let reference = try simulation.run()
        let plain = try Self.simulation(seed: 0, rounds: 8, fedprox: nil).run()
        let statuses = try await Self.run([DigitsSilos.plan(rounds: 8, quorum: 5, extra: "fedprox: 0.1")], shards: try simulation.shards(), seed: 0)
        let status = try #require(statuses.first)
        #expect(status.state == .finished && status.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 5 },
                "\(status.reason ?? "") \(status.rounds.map { ($0.state, $0.reason) })")
        let networked = try #require(status.evaluation?.pooledAccuracy)
        print(String(format: "FedProx μ 0.1, non-IID digits, 8 rounds: networked %.4f, simulator %.4f (FedAvg in the simulator %.4f)",
                     networked, reference.final.accuracy, plain.final.accuracy))
        #expect(abs(networked - reference.final.accuracy) <= 0.01, "networked \(networked) vs simulated \(reference.final.accuracy)")
        // The proximal term moved the model: FedProx's parameters are not FedAvg's.
        let gap = zip(reference.model.parameters, plain.model.parameters).map { abs($0 - $1) }.max() ?? 0
        #expect(gap > 1e-3, "FedProx and FedAvg ended at the same model (largest gap \(gap))")
    }

    @Test("a SCAFFOLD plan on label-skewed digits reaches its simulator's accuracy within a point: the server's control variate travels in each round's file, each silo's change in it is derived from its update, and the model is not FedAvg's")
    func scaffoldMatchesTheSimulator() async throws {
        let simulation = try Self.simulation(seed: 0, rounds: 8, fedprox: nil, scaffold: true)
        let reference = try simulation.run()
        let plain = try Self.simulation(seed: 0, rounds: 8, fedprox: nil).run()
        let statuses = try await Self.run([DigitsSilos.plan(rounds: 8, quorum: 5, extra: "scaffold: true")], shards: try simulation.shards(), seed: 0)
        let status = try #require(statuses.first)
        #expect(status.state == .finished && status.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 5 },
                "\(status.reason ?? "") \(status.rounds.map { ($0.state, $0.reason) })")
        let networked = try #require(status.evaluation?.pooledAccuracy)
        print(String(format: "SCAFFOLD, non-IID digits, 8 rounds: networked %.4f, simulator %.4f (FedAvg in the simulator %.4f)",
                     networked, reference.final.accuracy, plain.final.accuracy))
        #expect(abs(networked - reference.final.accuracy) <= 0.01, "networked \(networked) vs simulated \(reference.final.accuracy)")
        // The control variates moved the model: SCAFFOLD's parameters are not FedAvg's, and the networked
        // model is the simulator's up to float rounding (the broker derives what the simulator's silos compute).
        let gap = zip(reference.model.parameters, plain.model.parameters).map { abs($0 - $1) }.max() ?? 0
        #expect(gap > 1e-3, "SCAFFOLD and FedAvg ended at the same model (largest gap \(gap))")
        let drift = zip(reference.model.parameters, status.parameters).map { abs($0 - $1) }.max() ?? 1
        #expect(drift < 1e-2, "networked and simulated SCAFFOLD models differ by up to \(drift)")
    }

    @Test("an 8-bit plan moves at least 3.5× fewer update bytes per round than the same plan in float32, for under a point of accuracy; status says so round by round")
    func eightBitUpdates() async throws {
        let shards = try Self.simulation(seed: 3, rounds: 8, fedprox: nil).shards()
        let plans = [DigitsSilos.plan(rounds: 8, quorum: 5), DigitsSilos.plan(rounds: 8, quorum: 5, extra: "compression: q8")]
        let (statuses, traffic) = try await Self.withLabs(shards, seed: 3) { consortium, store, broker, _ in
            var statuses: [BrokerCoordinator.PlanStatus] = []
            for plan in plans {
                let hash = try await NetworkedRoundTests.submit(plan, consortium, port: broker.port)
                statuses.append(try #require(await broker.coordinator.finished(hash)))
            }
            // What the compliance report reads: each committed round's bytes in the broker's trail.
            let traffic = try await store.auditRecords().compactMap { r -> AuditEvent.RoundTraffic? in
                if case .success(.roundTraffic(let t)) = AuditEvent.of(r) { return t } else { return nil }
            }
            return (statuses, traffic)
        }
        let (float32, q8) = (statuses[0], statuses[1])
        #expect(traffic.count == 16 && traffic.filter { $0.codec == "q8" }.map(\.bytesIn) == q8.rounds.map(\.bytesIn)
                && traffic.filter { $0.codec == nil }.allSatisfy { $0.bytesIn >= $0.rawBytes }, "\(traffic)")  // float32 safetensors: values and a header
        for s in statuses {
            #expect(s.state == .finished && s.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 5 }, "\(s.reason ?? "")")
        }
        let a = try #require(float32.evaluation?.pooledAccuracy), b = try #require(q8.evaluation?.pooledAccuracy)
        let perRound = zip(float32.rounds, q8.rounds).map { Double($0.bytesIn) / Double(max($1.bytesIn, 1)) }
        print(String(format: "float32 %.4f, q8 %.4f accuracy; update bytes per round %d vs %d (%.2f× fewer)", a, b,
                     float32.rounds[0].bytesIn, q8.rounds[0].bytesIn, perRound.min() ?? 0))
        #expect(abs(a - b) < 0.01, "float32 \(a) vs q8 \(b)")
        #expect(perRound.allSatisfy { $0 >= 3.5 }, "\(perRound)")
        // Each q8 round's status carries its bytes and float32's: five 650-value updates, 8 + 650 bytes each.
        let dimension = 65 * 10
        #expect(q8.rounds.allSatisfy { $0.bytesIn == 5 * (8 + dimension) && $0.rawBytes == 5 * 4 * dimension }, "\(q8.rounds.map { ($0.bytesIn, $0.rawBytes) })")
    }

    @Test("client sampling: each round offers the plan's draw of four of the five silos (recomputable from the plan's hash), and a silo at its daily quota refuses the next round it is drawn for, by rule")
    func sampledRounds() async throws {
        let shards = try Self.simulation(seed: 6, rounds: 5, fedprox: nil).shards()
        let plan = DigitsSilos.plan(rounds: 5, quorum: 3, extra: "sampling: { count: 4 }")
        let statuses = try await Self.run([plan], shards: shards, seed: 6, policyExtra: ["lab-1": "quota: { rounds_per_day: 1 }"])
        let status = try #require(statuses.first)
        #expect(status.state == .finished, "\(status.reason ?? "") \(status.rounds.map { ($0.number, $0.state, $0.reason, $0.refused) })")
        let hash = try TrainingPlan.parse(plan, file: "p.yaml").contentHash
        let draw = RoundSampling(.count(4))
        var quotaRefusals = 0, lab1Rounds = 0
        for r in status.rounds {
            let expected = draw.sample(Self.silos, planHash: hash, round: r.number)
            #expect(r.sampled == expected, "round \(r.number): sampled \(r.sampled), the draw is \(expected)")
            #expect(Set(r.participants).isSubset(of: Set(expected)))
            if r.participants.contains("lab-1") { lab1Rounds += 1 }
            if r.refused["lab-1"]?.contains(where: { $0.hasPrefix("quota:") }) == true { quotaRefusals += 1 }
        }
        // lab-1 took part in one round and refused every later round it was drawn for.
        let drawnForLab1 = status.rounds.filter { $0.sampled.contains("lab-1") }.count
        print("sampling 4 of 5 over 5 rounds: \(status.rounds.map { "\($0.number): \($0.sampled.joined(separator: ","))" }); lab-1 drawn \(drawnForLab1)×, took part \(lab1Rounds)×")
        #expect(lab1Rounds == min(1, drawnForLab1) && quotaRefusals == max(0, drawnForLab1 - 1), "lab-1 took part \(lab1Rounds)×, refused \(quotaRefusals)×")
    }

    @Test("two plans submitted at once run side by side on the same five silos and both finish, each with its own rounds and ledger entries")
    func concurrentPlans() async throws {
        let shards = try Self.simulation(seed: 7, rounds: 4, fedprox: nil).shards()
        try await Self.withLabs(shards, seed: 7) { consortium, brokerStore, broker, _ in
            let plans = [DigitsSilos.plan(rounds: 4, quorum: 5), DigitsSilos.plan(strategy: "median", rounds: 4, quorum: 5)]
            async let first = NetworkedRoundTests.submit(plans[0], consortium, port: broker.port)
            async let second = NetworkedRoundTests.submit(plans[1], consortium, port: broker.port)
            let hashes = try await [first, second]
            for hash in hashes {
                let status = try #require(await broker.coordinator.finished(hash))
                #expect(status.state == .finished && status.rounds.count == 4 && status.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 5 },
                        "\(status.reason ?? "") \(status.rounds.map { ($0.state, $0.reason) })")
                #expect((status.evaluation?.pooledAccuracy ?? 0) > 0.8)
            }
            // They ran side by side: each plan's first round opened before the other plan finished.
            let trail = try await brokerStore.auditRecords()
            func seq(_ action: String, _ hash: String) -> Int { trail.first { $0.action == action && $0.subject == hash }?.seq ?? .max }
            #expect(seq("round.planned", hashes[1]) < seq("plan.finished", hashes[0]) && seq("round.planned", hashes[0]) < seq("plan.finished", hashes[1]))
            for id in Self.silos {
                let entries = try await consortium.store(id).entries(dataset: "digits").filter { $0.state == .committed }
                for hash in hashes { #expect(entries.filter { $0.planHash == hash && $0.round >= 1 }.count == 4, "\(id): \(hash.prefix(8))") }
            }
        }
    }

    @Test("with one round at a time across plans, three plans submitted at once all finish, their rounds never overlap, and they take turns: round after round, each plan waits for the others' next round")
    func fairScheduler() async throws {
        let shards = try Self.simulation(seed: 9, rounds: 3, fedprox: nil).shards()
        var settings = BrokerCoordinator.Settings()
        settings.maxConcurrentRounds = 1
        try await Self.withLabs(shards, seed: 9, settings: settings) { consortium, brokerStore, broker, _ in
            let plans = ["fedavg", "median", "trimmed-mean:0.2"].map { DigitsSilos.plan(strategy: $0, rounds: 3, quorum: 5) }
            let hashes = try await withThrowingTaskGroup(of: String.self) { group in
                for plan in plans { group.addTask { try await NetworkedRoundTests.submit(plan, consortium, port: broker.port) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for hash in hashes {
                let status = try #require(await broker.coordinator.finished(hash))
                #expect(status.state == .finished && status.rounds.count == 3 && status.rounds.allSatisfy { $0.state == "committed" },
                        "\(status.reason ?? "") \(status.rounds.map { ($0.state, $0.reason) })")
            }
            // The trail, round by round: each round planned only after the one before it (of any plan) committed.
            let events = try await brokerStore.auditRecords().filter { ["round.planned", "round.committed"].contains($0.action) }
            let opened = events.filter { $0.action == "round.planned" }.count, closed = events.filter { $0.action == "round.committed" }.count
            #expect(opened == 9 && closed == 9)
            #expect(zip(events, events.dropFirst()).allSatisfy { $0.action != $1.action }, "rounds overlapped: \(events.map { "\($0.action) \($0.subject.prefix(6))" })")
            // Turns: once all three plans have had a round, no plan has two rounds in a row while another still has rounds to run.
            let order = events.filter { $0.action == "round.committed" }.map(\.subject)
            let tags = Dictionary(uniqueKeysWithValues: hashes.enumerated().map { ($1, "ABC"[String.Index(utf16Offset: $0, in: "ABC")]) })
            print("fair scheduler, one round at a time: \(String(order.compactMap { tags[$0] }))")
            let start = (order.indices.first { Set(order[...$0]).count == 3 } ?? 0) + 1
            for i in start..<order.count where i > 0 && order[i] == order[i - 1] {
                let othersLeft = hashes.filter { h in h != order[i] && order[i...].contains(h) }
                #expect(othersLeft.isEmpty, "\(tags[order[i]] ?? "?") ran twice in a row at \(i) while others had rounds left: \(String(order.compactMap { tags[$0] }))")
            }
        }
    }

    @Test("a silo's max_concurrent_plans: at 1, it refuses a second plan while it is in one (rule concurrency), and takes a third once the broker announced the first ended")
    func concurrencyLimit() async throws {
        let shards = try Self.simulation(seed: 8, rounds: 3, fedprox: nil).shards()
        try await Self.withLabs(shards, seed: 8, policyExtra: ["lab-0": "max_concurrent_plans: 1"]) { consortium, _, broker, gateways in
            let (lab0, coordinator) = (gateways[0], broker.coordinator)
            await eventually { await coordinator.connectedSilos.count >= Self.silos.count }
            let first = try await NetworkedRoundTests.submit(DigitsSilos.plan(rounds: 3, quorum: 4), consortium, port: broker.port)
            // Once lab-0 is in the first plan (its first round committed with it), a second plan is offered.
            let inFirst = await eventually { await coordinator.status(first)?.rounds.first?.participants.contains("lab-0") == true }
            #expect(inFirst)
            let second = try await NetworkedRoundTests.submit(DigitsSilos.plan(strategy: "median", rounds: 2, quorum: 4), consortium, port: broker.port)
            let b = try #require(await broker.coordinator.finished(second))
            let a = try #require(await broker.coordinator.finished(first))
            #expect(a.state == .finished && a.rounds.allSatisfy { $0.participants.contains("lab-0") }, "\(a.reason ?? "")")
            #expect(b.state == .finished && b.rounds.allSatisfy { !$0.participants.contains("lab-0") && $0.participants.count == 4 }, "\(b.reason ?? "")")
            #expect(b.refusals["lab-0"]?.contains { $0.hasPrefix("concurrency:") } == true, "\(b.refusals)")
            // The broker announced both ends; lab-0 is in no plan, and takes the next one.
            let free = await eventually { await lab0.activePlans.isEmpty }
            #expect(free)
            let third = try await NetworkedRoundTests.submit(DigitsSilos.plan(rounds: 1, quorum: 5), consortium, port: broker.port)
            let c = try #require(await broker.coordinator.finished(third))
            #expect(c.state == .finished && c.rounds.first?.participants.contains("lab-0") == true, "\(c.reason ?? "") \(c.refusals)")
        }
    }
}
