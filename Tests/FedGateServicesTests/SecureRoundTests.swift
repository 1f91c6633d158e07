import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGateProto
@_spi(Testing) import FedGateServices
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Synchronization
import Testing
@testable import FedGateConsortiumTesting

/// Every log line a broker writes, message and metadata, for checking what it ever said.
final class RecordingLogHandler: LogHandler, @unchecked Sendable {
    static let lines = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let text = "\(event.level) \(event.message) \(event.metadata ?? [:]) \(metadata)"
        Self.lines.withLock { $0.append(text) }
    }
}

@Suite("Secure aggregation over the network")
struct SecureRoundTests {
    @Test("three gateways mask their updates: the broker unmasks only their sum (equal to the plain mean within the noise), and its store and logs hold no silo's update")
    func maskedRound() async throws {
        let logger = Logger(label: "fedgate.broker.secagg") { _ in RecordingLogHandler() }
        try await Self.withThreeSilos(logger: logger) { consortium, _, broker, silos in
            // Almost no distributed noise, so the unmasked mean can be compared with the plain one.
            let plan = Fixtures.plan(rounds: 1, quorum: 3)
                .replacingOccurrences(of: "secure_aggregation: false", with: "secure_aggregation: true")
                .replacingOccurrences(of: "delta: 1.0e-5 }", with: "delta: 1.0e-5, distributed_noise_multiplier: 0.01 }")
            let hash = try await NetworkedRoundTests.submit(plan, consortium, port: broker.port)
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished && status.rounds.map(\.state) == ["committed"], "\(status.rounds.map { ($0.state, $0.reason) }) \(status.reason ?? "")")
            #expect(status.rounds.first?.participants.count == 3)

            // The new model is the initial one plus the mean of the silos' clipped updates.
            let initial = try Network(kind: .logistic, inputs: Fixtures.data.featureCount, classes: 2, seed: 0).parameters
            var deltas: [[Float]] = []
            for silo in silos { deltas.append(await silo.gateway.activity.lastDelta) }
            // A silo that never trained has no delta: stop here rather than index past it (and crash the suite).
            try #require(deltas.allSatisfy { $0.count == initial.count }, "\(deltas.map(\.count)) against \(initial.count) parameters")
            var mean = [Float](repeating: 0, count: initial.count)
            for d in deltas {
                let norm = Float(VectorMath.l2Norm(d))
                let factor: Float = norm > 1 ? 1 / norm : 1
                for k in mean.indices { mean[k] += d[k] * factor / Float(deltas.count) }
            }
            let gap = zip(status.parameters, zip(initial, mean)).map { abs($0 - ($1.0 + $1.1)) }.max() ?? .infinity
            #expect(status.parameters.count == initial.count && gap < 0.02, "largest gap from the plain mean: \(gap)")

            // Nothing the broker stored or logged holds a silo's update: not its float32 bytes, not its values in text.
            var database = try Data(contentsOf: consortium.file("broker.sqlite"))
            database.append((try? Data(contentsOf: consortium.file("broker.sqlite-wal"))) ?? Data())
            let logs = RecordingLogHandler.lines.withLock { $0.joined(separator: "\n") }
            #expect(logs.contains("masked sum unmasked"), "the broker's log was captured")
            for d in deltas {
                for start in stride(from: 0, to: d.count - 4, by: 4) {
                    let window = d[start..<(start + 4)].withUnsafeBytes { Data($0) }
                    #expect(database.range(of: window) == nil, "a silo's update bytes are in the broker's store")
                }
                for v in d.sorted(by: { abs($0) > abs($1) }).prefix(5) { #expect(!logs.contains("\(v)"), "the value \(v) of an update is in the broker's log") }
            }
        }
    }

    @Test("a broker that tells one silo a different survivor list is caught by the consistency check: no silo unmasks, the round aborts and the plan has no model")
    func lyingBroker() async throws {
        var settings = BrokerCoordinator.Settings()
        // hospital-2 is told hospital-1 dropped: the list a broker would need to get hospital-1's masking-key
        // shares from hospital-2 while hospital-0 gives up hospital-1's self-mask share.
        settings.tellSurvivors = { silo, survivors in silo == "hospital-2" ? survivors.filter { $0 != "hospital-1" } : survivors }
        try await Self.withThreeSilos(settings: settings) { consortium, brokerStore, broker, _ in
            let plan = Fixtures.plan(rounds: 1, quorum: 3, deadline: 20)
                .replacingOccurrences(of: "secure_aggregation: false", with: "secure_aggregation: true")
                .replacingOccurrences(of: "delta: 1.0e-5 }", with: "delta: 1.0e-5, distributed_noise_multiplier: 0.01 }")
            let hash = try await NetworkedRoundTests.submit(plan, consortium, port: broker.port)
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .failed && status.rounds.map(\.state) == ["aborted"] && status.modelVersion == nil,
                    "\(status.rounds.map { ($0.state, $0.reason) }) \(status.reason ?? "")")
            #expect(status.rounds.first?.reason?.contains("unmask") == true, "\(status.rounds.first?.reason ?? "")")
            #expect(try await brokerStore.modelVersions().isEmpty)
        }
    }

    /// Three gateways on the breast-cancer shards of seed 3 and a broker with `settings` and `logger`, while `body` runs.
    static func withThreeSilos(settings: BrokerCoordinator.Settings = .init(), logger: Logger? = nil,
                               _ body: @escaping @Sendable (Consortium, SQLiteLedger, BrokerHandle, [NetworkedRoundTests.Silo]) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 3).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore, settings: settings,
                                   logger: logger ?? consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, broker: brokerStore, port: broker.port))
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 3 }
            try await body(consortium, brokerStore, broker, silos)
        }
    }

    /// Three gateways (hospital-2 drops out after sharing its keys, each with `policy`), a secure
    /// one-round plan of quorum 2; `check` gets the broker's store, the silos and the plan's end.
    func dropOut(policy: @escaping @Sendable (String) -> String = { Fixtures.policy(silo: $0) },
                 _ check: @escaping @Sendable (any BrokerStore, [NetworkedRoundTests.Silo], BrokerCoordinator.PlanStatus) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 5).shards()
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore,
                                   logger: consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, policy: policy("hospital-\(i)"),
                                                                      broker: brokerStore, port: broker.port) { if i == 2 { $0.dropOutBeforeMasking = true } })
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 3 }
            let plan = Fixtures.plan(rounds: 1, quorum: 2, deadline: 30)
                .replacingOccurrences(of: "secure_aggregation: false", with: "secure_aggregation: true")
                .replacingOccurrences(of: "delta: 1.0e-5 }", with: "delta: 1.0e-5, distributed_noise_multiplier: 0.01 }")
            let hash = try await NetworkedRoundTests.submit(plan, consortium, port: broker.port)
            try await check(brokerStore, silos, try #require(await broker.coordinator.finished(hash)))
        }
    }

    @Test("a silo that drops out after sharing its keys: the others' masks are recovered, the round commits on quorum with their mean, and the silo spends nothing")
    func dropoutRecovered() async throws {
        try await dropOut { _, silos, status in
            #expect(status.rounds.map(\.state) == ["committed"] && status.rounds.first?.participants == ["hospital-0", "hospital-1"],
                    "\(status.rounds.map { ($0.state, $0.participants, $0.reason) })")
            let initial = try Network(kind: .logistic, inputs: Fixtures.data.featureCount, classes: 2, seed: 0).parameters
            var mean = [Float](repeating: 0, count: initial.count)
            for (i, silo) in silos.prefix(2).enumerated() {
                let d = await silo.gateway.activity.lastDelta
                try #require(d.count == initial.count, "hospital-\(i) has no delta of the round: \(d.count) values")
                let norm = Float(VectorMath.l2Norm(d))
                let factor: Float = norm > 1 ? 1 / norm : 1
                for k in mean.indices { mean[k] += d[k] * factor / 2 }
            }
            let gap = zip(status.parameters, zip(initial, mean)).map { abs($0 - ($1.0 + $1.1)) }.max() ?? .infinity
            // The survivors' distributed noise has standard deviation z·C = 0.01 on their sum, 0.005 on
            // the mean: six of those bound the largest of the model's 31 coordinates but about once
            // in 10⁷ runs (the bound of 0.02, four, was passed by 0.0206 in one of eight suite runs),
            // and a mask left in or a wrong divisor still misses by far more.
            #expect(status.parameters.count == initial.count && gap < 6 * 0.01 / 2, "largest gap from the survivors' plain mean: \(gap)")
            // The silo that left never sent its update: its round's reservation released, nothing left
            // reserved. Its statistics release went with its answer to the first offer: committed.
            let rounds = { try await silos[2].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.round > 0 } }
            await eventually { (try? await rounds().allSatisfy { $0.state == .released }) == true }
            let entries = try await rounds()
            #expect(!entries.isEmpty && entries.allSatisfy { $0.state == .released }, "\(entries.map(\.state))")
            let statistics = try await silos[2].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.round == 0 }
            #expect(statistics.map(\.state) == [.committed])
        }
    }

    @Test("survivors whose policy asks three survivors will not unmask the sum of two: the round aborts, no model is made, and each records why")
    func survivorsBelowPolicy() async throws {
        let policy: @Sendable (String) -> String = { silo in
            Fixtures.policy(silo: silo).replacingOccurrences(of: "  min_silos_per_round: 2", with: "  min_silos_per_round: 2\n  min_secagg_survivors: 3")
        }
        try await dropOut(policy: policy) { brokerStore, silos, status in
            #expect(status.rounds.map(\.state) == ["aborted"], "\(status.rounds.map { ($0.state, $0.reason) })")
            #expect(try await brokerStore.modelVersions().isEmpty)
            for silo in silos.prefix(2) {
                let records = try await silo.ledger.backend.auditRecords().filter { $0.action == "secagg.refuse" }
                #expect(records.count == 1 && records.first?.payload.contains("2 silos survived the round") == true, "\(records.map(\.payload))")
            }
        }
    }
}
