import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
@_spi(Testing) import FedGateServices
import FedGateSimulation
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Testing
@testable import FedGateConsortiumTesting

/// Rounds over the network: a broker and gateways on loopback over mutual TLS, each gateway with
/// its own policy, ledger and shard of the breast-cancer data.
@Suite("Networked federated rounds")
struct NetworkedRoundTests {
    struct Silo {
        let gateway: Gateway
        let ledger: PrivacyLedger
    }

    func makeSilo(_ consortium: Consortium, _ id: String, train: Dataset, test: Dataset, policy: String? = nil,
                  broker: any RegistryBackend, port: Int, fixedNoise: (run: UInt64, silo: Int)? = nil,
                  configure: (inout Gateway.Settings) -> Void = { _ in }) async throws -> Silo {
        let store = try await consortium.store(id)
        try await store.save(DatasetBudget(name: "breast-cancer-2024", delta: 1e-5, perPlanCap: 5, lifetimeCap: 20), actor: "admin")
        try await store.addConsent(ConsentRecord(dataset: "breast-cancer-2024", purpose: "research", legalBasis: "consent",
                                                 scope: "all patients", validFrom: Date().addingTimeInterval(-86_400)), actor: "admin")
        let text = policy ?? Fixtures.policy(silo: id)
        let ledger = PrivacyLedger(backend: store)
        let governor = SiloGovernor(policy: try SiloPolicy.parse(text, file: "\(id).yaml"), policyText: text, ledger: ledger)
        var settings = Gateway.Settings(credentials: try await consortium.enrolledSilo(id, in: broker), dataset: "breast-cancer-2024", train: train, test: test)
        settings.brokerPort = port
        settings.learningRate = 0.5
        settings.fixedNoise = fixedNoise
        configure(&settings)
        return Silo(gateway: Gateway(settings: settings, governor: governor, logger: consortium.logger), ledger: ledger)
    }

    /// Submits a plan as the data scientist "dana"; its hash.
    static func submit(_ yaml: String, _ consortium: Consortium, port: Int) async throws -> String {
        try await withGRPCClient(transport: try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker",
                                                                         credentials: try consortium.credentials("dana", .dataScientist))) { grpc in
            var request = Fedgate_V1_SubmitPlanRequest()
            request.planYaml = yaml
            return try await Fedgate_V1_Broker.Client(wrapping: grpc).submitPlan(request).planHash
        }
    }

    func waitForGateways(_ broker: BrokerHandle, _ count: Int) async throws {
        await eventually { await broker.coordinator.connectedSilos.count >= count }
    }

    /// Pooled accuracy of `parameters` on every silo's held-out rows, standardised as the consortium
    /// agreed from the silos' statistics releases (their noise from the run's fixed seed).
    static func pooledAccuracy(_ parameters: [Float], shards: [(train: Dataset, test: Dataset)], seed: UInt64) throws -> Double {
        let stats = try Fixtures.standardisation(shards, seed: seed)
        var net = try Network(kind: .logistic, inputs: Fixtures.data.featureCount, classes: 2, seed: 0)
        net.parameters = parameters
        var correct = 0.0, total = 0.0
        for shard in shards {
            var test = shard.test
            test.standardise(stats)
            let m = net.evaluate(test)
            correct += m.accuracy * Double(test.count)
            total += Double(test.count)
        }
        return correct / total
    }

    @Test("three gateways, ten FedAvg rounds with DP-SGD over mTLS: the simulator's accuracy for the same seed, ε as accounted, every round in the store")
    func endToEnd() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let simulation = try Fixtures.simulation(seed: 1)
        let shards = try simulation.shards()
        let reference = try simulation.run()
        let simulated = reference.final.accuracy
        // Tiny chunks, and one silo that downloads in ranges smaller than the model file and not a
        // multiple of the chunk size: the model must still arrive bit for bit.
        var limits = TransportLimits()
        limits.chunkBytes = 48
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   limits: limits, logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, broker: brokerStore, port: broker.port,
                                                fixedNoise: (1, i)) { if i == 1 { $0.limits.downloadRangeBytes = 100; $0.limits.chunkBytes = 40 } })
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await waitForGateways(broker, 3)

            let scientist = try consortium.credentials("dana", .dataScientist)
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: scientist)
            let hash = try await withGRPCClient(transport: transport) { grpc in
                var request = Fedgate_V1_SubmitPlanRequest()
                request.planYaml = Fixtures.plan(rounds: 10, quorum: 3)
                return try await Fedgate_V1_Broker.Client(wrapping: grpc).submitPlan(request).planHash
            }
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished, "\(status.reason ?? "")")
            #expect(status.rounds.count == 10)
            #expect(status.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 3 }, "\(status.rounds.map { ($0.state, $0.reason) })")

            let networked = try Self.pooledAccuracy(status.parameters, shards: shards, seed: 1)
            #expect(networked >= 0.9)
            #expect(abs(networked - simulated) <= 0.01 + 1e-9, "networked \(networked) vs simulated \(simulated)")
            // Same shards, same noise seeds, same order of sums: the networked model is the simulator's.
            let gap = zip(status.parameters, reference.model.parameters).map { abs($0 - $1) }.max() ?? .infinity
            #expect(status.parameters.count == reference.model.parameters.count && gap <= 1e-5, "largest parameter gap \(gap)")

            // Every round went planned → offered → training → aggregating → evaluating → committed in the store.
            let rounds = try await brokerStore.rounds(planHash: hash)
            #expect(rounds.count == 10 && rounds.allSatisfy { $0.state == .committed && $0.survivors.count == 3 })
            let transitions = try await brokerStore.auditRecords().filter { $0.action.hasPrefix("round.") }.count
            #expect(transitions >= 60, "\(transitions) round records")

            // Each silo's ledger committed exactly its statistics release (round 0, before the first
            // round) and its ten rounds of DP-SGD, and ε is the accountant's for them composed.
            let expected = try epsilon(of: .composed([.gaussian(noiseMultiplier: Fixtures.statisticsNoise),
                                                      .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 100)]), delta: 1e-5)
            #expect(abs(expected - reference.epsilonPerSilo[0]) < 1e-9, "the simulator accounts the same release: \(reference.epsilonPerSilo)")
            for silo in silos {
                let entries = try await silo.ledger.backend.entries(dataset: "breast-cancer-2024")
                #expect(entries.count == 11 && entries.allSatisfy { $0.state == .committed }, "\(entries.map { ($0.round, $0.state) })")
                #expect(entries.filter { $0.round == 0 }.map(\.event) == [.gaussian(noiseMultiplier: Fixtures.statisticsNoise)])
                let spent = try await silo.ledger.spent(dataset: "breast-cancer-2024", delta: 1e-5)
                #expect(abs(spent.committed - expected) < 1e-9)
                #expect(await silo.gateway.activity.updatesSent == 10)
            }

            // The final model was evaluated at every silo: pooled, that is the simulator's accuracy on
            // the same held-out rows; each silo reported the ε its own ledger committed.
            let evaluation = try #require(status.evaluation)
            #expect(evaluation.silos.map(\.silo) == ["hospital-0", "hospital-1", "hospital-2"])
            #expect(abs(evaluation.pooledAccuracy! - simulated) < 1e-9, "evaluated \(evaluation.pooledAccuracy!) vs simulated \(simulated)")
            #expect(evaluation.silos.allSatisfy { abs($0.epsilonSpent - expected) < 1e-9 && $0.epsilonCap == 5 })
            // The broker's mirror, followed live, agrees with each silo's ledger.
            #expect(status.epsilonMirror.count == 3 && status.epsilonMirror.values.allSatisfy { abs($0 - expected) < 1e-9 }, "\(status.epsilonMirror)")
            #expect(status.gate == GateDecision(passed: true, reasons: []) && status.modelVersion == 1)

            // It became version 1, with its lineage, and pulls back as the very file, range by range.
            try await withGRPCClient(transport: try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker",
                                                                             credentials: scientist)) { grpc in
                let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                let versions = try await client.listModels(Fedgate_V1_ListModelsRequest()).versions
                #expect(versions.count == 1)
                let v = try #require(versions.first)
                #expect(v.version == 1 && v.planHash == hash && v.round == 10 && v.participants == ["hospital-0", "hospital-1", "hospital-2"])
                #expect(v.epsilonPerSilo.values.allSatisfy { abs($0 - expected) < 1e-9 } && abs((v.metrics["accuracy"] ?? 0) - evaluation.pooledAccuracy!) < 1e-12)
                var assembler = TransferAssembler(maximumBytes: 1 << 20, what: "version 1")
                var pull = Fedgate_V1_PullModelRequest()
                pull.version = 1
                pull.length = 100
                while true {
                    let chunks = try await client.pullModel(pull) { response in try await Array(response.messages) }
                    for c in chunks { try assembler.add(c) }
                    pull.offset += 100
                    if chunks.last?.sha256.isEmpty == false { break }
                }
                let (_, file, sha) = try assembler.finishWithDigest()
                #expect(sha == v.contentSha256)
                #expect(try ModelPayload.modelParameters(file, dimension: status.parameters.count) == status.parameters)
            }
        }
    }

    @Test("FedPer: the layer a plan keeps local never reaches the broker; each silo reports its personalised, fine-tuned model against the global one")
    func personalisation() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 2).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                let id = "hospital-\(i)"
                silos.append(try await makeSilo(consortium, id, train: shard.train, test: shard.test,
                                                policy: Fixtures.policy(silo: id).replacingOccurrences(of: "models: [logistic]", with: "models: [logistic, mlp]"),
                                                broker: brokerStore, port: broker.port, fixedNoise: (2, i)))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await waitForGateways(broker, 3)
            let plan = Fixtures.plan(rounds: 5, quorum: 3).replacingOccurrences(of: "model: logistic", with: "model: mlp:8")
                + "\npersonalisation: { local_layers: [1], fine_tune_epochs: 3 }\n"
            let hash = try await withGRPCClient(transport: try FedGateTransports.client(
                host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: try consortium.credentials("dana", .dataScientist))) { grpc in
                let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                // All layers local would leave nothing to share: refused.
                var bad = Fedgate_V1_SubmitPlanRequest()
                bad.planYaml = plan.replacingOccurrences(of: "local_layers: [1]", with: "local_layers: [0, 1]")
                await #expect(throws: RPCError.self) { _ = try await client.submitPlan(bad) }
                var request = Fedgate_V1_SubmitPlanRequest()
                request.planYaml = plan
                return try await client.submitPlan(request).planHash
            }
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished && status.rounds.allSatisfy { $0.state == "committed" }, "\(status.rounds.map { ($0.state, $0.reason) })")
            // The broker's model: layer 0 learnt from the silos; layer 1 exactly as it started (no silo sent any of it).
            let initial = try Network(kind: .mlp(hidden: [8]), inputs: Fixtures.data.featureCount, classes: 2, seed: 0)
            let head = initial.layerRanges[1], body = initial.layerRanges[0]
            #expect(Array(status.parameters[head]) == Array(initial.parameters[head]))
            #expect(Array(status.parameters[body]) != Array(initial.parameters[body]))
            let evaluation = try #require(status.evaluation)
            #expect(evaluation.silos.count == 3 && evaluation.silos.allSatisfy { $0.personalisedAccuracy != nil })
            let rows = Double(evaluation.silos.reduce(0) { $0 + $1.examples })
            let personalised = evaluation.silos.reduce(0.0) { $0 + ($1.personalisedAccuracy ?? 0) * Double($1.examples) } / rows
            #expect(personalised >= 0.85, "pooled personalised accuracy \(personalised)")
            #expect(personalised > (evaluation.pooledAccuracy ?? 1), "personalised \(personalised) against the global model's \(evaluation.pooledAccuracy ?? 0)")
        }
    }

    @Test("the plan's gate holds back a model below its bar, with the reason; an admin rolls back to an earlier version; a cancelled plan stops")
    func gateRollbackCancel() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let simulation = try Fixtures.simulation(seed: 1)
        let shards = try simulation.shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await waitForGateways(broker, 3)
            let scientist = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker",
                                                         credentials: try consortium.credentials("dana", .dataScientist))
            let admin = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker",
                                                     credentials: try consortium.credentials("alex", .admin))
            func submit(_ yaml: String) async throws -> String { try await Self.submit(yaml, consortium, port: broker.port) }
            // Secure aggregation with a strategy that needs every update in the clear is refused at submission.
            do {
                _ = try await submit(Fixtures.plan(rounds: 1, quorum: 3).replacingOccurrences(of: "secure_aggregation: false", with: "secure_aggregation: true")
                    .replacingOccurrences(of: "strategy: fedavg", with: "strategy: median"))
                Issue.record("a secure-aggregation plan with a median was accepted")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented && error.message.contains("secure_aggregation"), "\(error)")
            }
            // Two plans that pass: versions 1 and 2 (the second's parent is the first).
            for rounds in [2, 3] {
                let hash = try await submit(Fixtures.plan(rounds: rounds, quorum: 3, evaluation: "{ min_accuracy: 0.5, max_drop: 0.5 }"))
                let status = try #require(await broker.coordinator.finished(hash))
                #expect(status.gate?.passed == true && status.modelVersion != nil, "\(status.gate?.reasons ?? [])")
            }
            // A bar no model reaches: no version, and the reason says why.
            let strict = try await submit(Fixtures.plan(rounds: 1, quorum: 3, evaluation: "{ min_accuracy: 1.0 }"))
            let held = try #require(await broker.coordinator.finished(strict))
            #expect(held.state == .finished && held.modelVersion == nil)
            #expect(held.gate?.passed == false && held.gate?.reasons.first?.hasPrefix("accuracy ") == true
                    && held.gate?.reasons.first?.hasSuffix("is below the plan's minimum 1.0") == true, "\(held.gate?.reasons ?? [])")
            let gates = try await brokerStore.auditRecords().filter { $0.action == "model.gate" }
            #expect(gates.count == 3 && gates.last!.payload.contains("\"passed\":false"))
            #expect(try await brokerStore.modelVersions().map(\.version) == [1, 2])

            // Rollback: only an admin; recorded as version 3 with version 1's file and parent 1.
            await #expect(throws: RPCError.self) {
                try await withGRPCClient(transport: scientist) { grpc in
                    var r = Fedgate_V1_RollbackModelRequest()
                    r.version = 1
                    _ = try await Fedgate_V1_Broker.Client(wrapping: grpc).rollbackModel(r)
                }
            }
            let rolled = try await withGRPCClient(transport: admin) { grpc in
                var r = Fedgate_V1_RollbackModelRequest()
                r.version = 1
                return try await Fedgate_V1_Broker.Client(wrapping: grpc).rollbackModel(r)
            }
            let versions = try await brokerStore.modelVersions()
            #expect(rolled.version == 3 && rolled.parent == 1 && versions.count == 3 && versions[2].contentSHA256 == versions[0].contentSHA256)

            // Cancelling a long plan stops it; the round in flight is aborted and every reservation is settled.
            let long = try await submit(Fixtures.plan(rounds: 1000, quorum: 3))
            await eventually { (await broker.coordinator.status(long)?.rounds.count ?? 0) >= 2 }
            let cancelled = try await withGRPCClient(transport: try FedGateTransports.client(
                host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: try consortium.credentials("dana", .dataScientist))) { grpc in
                var r = Fedgate_V1_CancelPlanRequest()
                r.planHash = long
                return try await Fedgate_V1_Broker.Client(wrapping: grpc).cancelPlan(r)
            }
            #expect(cancelled.state == "cancelled")
            for silo in silos {
                await eventually {
                    (try? await silo.ledger.backend.entries(dataset: "breast-cancer-2024").allSatisfy { $0.state != .reserved }) == true
                }
                #expect(try await silo.ledger.backend.entries(dataset: "breast-cancer-2024").allSatisfy { $0.state != .reserved })
            }
        }
    }

    @Test("a silo whose policy refuses the plan's purpose answers with its reason; the round runs on the quorum of the others")
    func refusalWithReason() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 2).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                let policy = i == 2 ? Fixtures.policy(silo: "clinic-2", purposes: ["quality-improvement"]) : nil
                silos.append(try await makeSilo(consortium, i == 2 ? "clinic-2" : "hospital-\(i)", train: shard.train, test: shard.test,
                                                policy: policy, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await waitForGateways(broker, 3)
            let hash = try await broker.coordinator.submit(try TrainingPlan.parse(Fixtures.plan(rounds: 2, quorum: 2), file: "plan"),
                                                           text: Fixtures.plan(rounds: 2, quorum: 2), by: "dana")
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.rounds.map(\.state) == ["committed", "committed"])
            #expect(status.rounds.allSatisfy { $0.participants == ["hospital-0", "hospital-1"] })
            let reasons = status.rounds[0].refused["clinic-2"] ?? []
            #expect(reasons.contains { $0.contains("purpose") && $0.contains("research") }, "\(reasons)")
            // The clinic reserved and released nothing; the hospitals committed their statistics
            // release and two rounds each.
            #expect(try await silos[2].ledger.backend.entries(dataset: "breast-cancer-2024").isEmpty)
            let committed = try await silos[0].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.state == .committed }
            #expect(committed.map(\.round).sorted() == [0, 1, 2])
        }
    }

    @Test("the broker keeps its rounds and audit on PostgreSQL: every transition stored, the chain verifies")
    func brokerOnPostgres() async throws {
        let consortium = try Consortium()
        guard let brokerStore = try await consortium.postgresStore() else { return }
        defer { brokerStore.shutdown() }
        let shards = try Fixtures.simulation(seed: 6).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await waitForGateways(broker, 3)
            let text = Fixtures.plan(rounds: 3, quorum: 3)
            let hash = try await broker.coordinator.submit(try TrainingPlan.parse(text, file: "plan"), text: text, by: "dana")
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.rounds.map(\.state) == ["committed", "committed", "committed"], "\(status.reason ?? "")")
            let rounds = try await brokerStore.rounds(planHash: hash)
            #expect(rounds.count == 3 && rounds.allSatisfy { $0.state == .committed && $0.survivors.count == 3 })
            let records = try await brokerStore.auditRecords()
            // Six transitions per round (planned … committed), and each committed round's traffic.
            #expect(records.filter { $0.action.hasPrefix("round.") && $0.action != "round.traffic" }.count == 18)
            #expect(records.filter { $0.action == "round.traffic" }.count == 3)
            #expect(AuditVerification.verify(records) == .intact(records: records.count))
        }
    }

    /// A broker with `settings` and two live gateways (hospital-0 and -1, shards of seed 3) while `body` runs.
    func withTwoLiveSilos(_ settings: BrokerCoordinator.Settings,
                          _ body: @escaping @Sendable (Consortium, SQLiteLedger, BrokerHandle) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 3).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   settings: settings, logger: consortium.logger) { broker in
            var silos: [Silo] = []
            for (i, shard) in shards.prefix(2).enumerated() {
                silos.append(try await makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await body(consortium, brokerStore, broker)
        }
    }

    @Test("a gateway that reconnects while a round is offered to it is dropped from that round at once: the round goes on without it, not held to its offer window")
    func reconnectDropsFromRound() async throws {
        var settings = BrokerCoordinator.Settings()
        // An offer window of minutes: before the fix, the round waited all of it for the silo
        // whose earlier stream was replaced (that stream's own close carries an old token).
        settings.offerWindow = .seconds(300)
        try await withTwoLiveSilos(settings) { consortium, brokerStore, broker in
            // A third silo takes the offer on its first stream, then opens a second one (as a gateway
            // does after a failed session) and never answers the offer on either.
            let flaky = try await consortium.enrolledSilo("hospital-flaky", in: brokerStore)
            let offered = Recorder<Int>()
            func stream(_ n: Int) -> Task<Void, any Error> {
                Task {
                    let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: flaky)
                    try await withGRPCClient(transport: transport) { grpc in
                        try await Fedgate_V1_Broker.Client(wrapping: grpc).connect(request: StreamingClientRequest { writer in
                            var hello = Fedgate_V1_GatewayMessage()
                            hello.hello.datasets = ["breast-cancer-2024"]
                            try await writer.write(hello)
                            // Alive (heartbeats), so the silence monitor does not drop it instead.
                            while true {
                                try await Task.sleep(for: .milliseconds(200))
                                var beat = Fedgate_V1_GatewayMessage()
                                beat.heartbeat.sentAtMs = 0
                                try await writer.write(beat)
                            }
                        }) { response in
                            for try await message in response.messages {
                                // The round's offer (round 0 is the plan's admission, before it).
                                if case .offer(let offer)? = message.kind, offer.round >= 1 { offered.add(n) }
                            }
                        }
                    }
                }
            }
            // The first stream stays open when the second opens: the broker replaces it.
            let first = stream(1)
            defer { first.cancel() }
            try await waitForGateways(broker, 3)
            let text = Fixtures.plan(rounds: 1, quorum: 2, deadline: 900)
            let hash = try await broker.coordinator.submit(try TrainingPlan.parse(text, file: "plan"), text: text, by: "dana")
            try #require(await offered.wait(seconds: 120) { $0 == 1 } != nil, "the offer never reached the first stream")
            let second = stream(2)
            defer { second.cancel() }
            let submitted = ContinuousClock.now
            let status = try #require(await broker.coordinator.finished(hash))
            let took = ContinuousClock.now - submitted
            #expect(status.rounds.map(\.state) == ["committed"], "\(status.rounds.map { ($0.number, $0.state, $0.reason) })")
            #expect(status.rounds.first?.participants == ["hospital-0", "hospital-1"])
            // Far below the offer window (300 s) even on a loaded machine.
            #expect(took < .seconds(150), "the round took \(took)")
        }
    }

    @Test("the broker notices a silent gateway: no heartbeats, its stream is closed and the round goes on without it")
    func silentGateway() async throws {
        var settings = BrokerCoordinator.Settings()
        // Generous: the suite's CPU-bound tests can hold the cooperative threads (and so the real
        // gateways' heartbeats) for a second or two on a two-core machine.
        settings.heartbeatInterval = .milliseconds(250)
        settings.silentAfter = .seconds(5)
        try await withTwoLiveSilos(settings) { consortium, brokerStore, broker in
            // A third silo opens its task stream, says hello, then never speaks again.
            let mute = try await consortium.enrolledSilo("hospital-mute", in: brokerStore)
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: mute)
            let closedAfter = Task {
                try await withGRPCClient(transport: transport) { grpc in
                    let start = ContinuousClock.now
                    try await Fedgate_V1_Broker.Client(wrapping: grpc).connect(request: StreamingClientRequest { writer in
                        var hello = Fedgate_V1_GatewayMessage()
                        hello.hello.datasets = ["breast-cancer-2024"]
                        try await writer.write(hello)
                        try await Task.sleep(for: .seconds(20))
                    }) { response in for try await _ in response.messages {} }
                    return ContinuousClock.now - start
                }
            }
            try await waitForGateways(broker, 3)
            let text = Fixtures.plan(rounds: 1, quorum: 2, deadline: 60)
            let hash = try await broker.coordinator.submit(try TrainingPlan.parse(text, file: "plan"), text: text, by: "dana")
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.rounds.map(\.state) == ["committed"], "\(status.rounds.map { ($0.number, $0.state, $0.reason) })")
            #expect(status.rounds.first?.participants == ["hospital-0", "hospital-1"])
            let closed = try await closedAfter.value
            #expect(closed >= .milliseconds(4500) && closed < .seconds(60), "the broker closed the silent stream after \(closed)")
            #expect(await broker.coordinator.connectedSilos == ["hospital-0", "hospital-1"])
        }
    }
}
