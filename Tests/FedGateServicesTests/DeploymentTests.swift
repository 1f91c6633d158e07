import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateRounds
@_spi(Testing) import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization
import Testing
@testable import FedGateConsortiumTesting

/// Staged rollout over mutual TLS: registry versions deployed to real gateways, monitored on their
/// fresh rows with DP, rolled back automatically when one silo's rows drift.
@Suite("Deployments: canary, promotion, drift alert and automatic rollback")
struct DeploymentTests {
    static let watch = ["mean_radius", "mean_texture", "mean_area"]
    static let monitoring = "monitoring: { noise_multiplier: 3.0, every_seconds: 3600, min_rows: 30 }"

    /// A shard's rows as a CSV export (the features by name, then the label), each watched column
    /// moved by `shift` of its own standard deviation.
    static func csv(_ rows: [Dataset], shift: Float = 0) -> String {
        let names = rows[0].featureNames
        let all = rows.flatMap { d in (0..<d.count).map { (Array(d.row($0)), d.labels[$0]) } }
        let moved = Set(watch.compactMap { names.firstIndex(of: $0) })
        let deviation = names.indices.map { j -> Float in
            let values = all.map { $0.0[j] }, mean = values.reduce(0, +) / Float(values.count)
            return (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(values.count)).squareRoot()
        }
        var text = (names + [rows[0].labelName]).joined(separator: ",") + "\n"
        for (x, label) in all {
            text += x.enumerated().map { j, v in "\(moved.contains(j) ? v + shift * deviation[j] : v)" }.joined(separator: ",") + ",\(label)\n"
        }
        return text
    }

    static func admin(_ consortium: Consortium, port: Int) throws -> HTTP2ClientTransport.Posix {
        try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: try consortium.credentials("ada", .admin))
    }

    static func deploy(_ version: Int, _ stage: String, silos: [String] = [], _ consortium: Consortium, port: Int) async throws -> Fedgate_V1_DeploymentsResponse {
        try await withGRPCClient(transport: try admin(consortium, port: port)) { grpc in
            var request = Fedgate_V1_DeployModelRequest()
            (request.version, request.stage, request.silos) = (UInt32(version), stage, silos)
            if stage == "canary" { request.watch = Self.watch }
            return try await Fedgate_V1_Broker.Client(wrapping: grpc).deployModel(request)
        }
    }

    @Test("a canary passes and is promoted to every silo; the next version's canary meets one silo's shifted rows, raises a drift alert and is rolled back to the version before, the rollback's time measured; every reference and check a silo sent is an event in its ledger")
    func canaryDriftRollback() async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: 9).shards()
        let sent = (0..<3).map { _ in Recorder<any Sendable>() }
        let fresh = (0..<3).map { consortium.file("fresh-\($0).csv") }
        for (i, shard) in shards.enumerated() { try Self.csv([shard.train, shard.test]).write(to: fresh[i], atomically: true, encoding: .utf8) }
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore, logger: consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                let policy = Fixtures.policy(silo: "hospital-\(i)", releases: Fixtures.allReleases + "\n" + Self.monitoring)
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test, policy: policy,
                                                                      broker: brokerStore, port: broker.port, fixedNoise: (9, i)) { settings in
                    settings.deployments = consortium.file("deployed-\(i)")
                    (settings.freshRows, settings.freshLabel) = (fresh[i], shard.train.labelName)
                    settings.outgoing = { sent[i].add($0) }
                })
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            await eventually { await broker.coordinator.connectedSilos.count >= 3 }

            // Two registry versions from two training plans.
            for rounds in [3, 2] {
                let hash = try await NetworkedRoundTests.submit(Fixtures.plan(rounds: rounds, quorum: 3), consortium, port: broker.port)
                #expect(await broker.coordinator.finished(hash)?.state == .finished)
            }
            #expect(try await brokerStore.modelVersions().map(\.version) == [1, 2])
            func rollout() async -> Rollout { await broker.coordinator.deployments }

            // Bad asks are refused, naming what is wrong; a data scientist may look but not deploy.
            await #expect { _ = try await Self.deploy(9, "canary", silos: ["hospital-0"], consortium, port: broker.port) } throws: { "\($0)".contains("no model version 9") }
            await #expect { _ = try await Self.deploy(1, "canary", silos: ["hospital-7"], consortium, port: broker.port) } throws: { "\($0)".contains("hospital-7 is not connected") }
            await #expect {
                _ = try await withGRPCClient(transport: try Self.admin(consortium, port: broker.port)) { grpc in
                    var request = Fedgate_V1_DeployModelRequest()
                    (request.version, request.stage, request.silos, request.watch) = (1, "canary", ["hospital-0"], ["blood_type"])
                    return try await Fedgate_V1_Broker.Client(wrapping: grpc).deployModel(request)
                }
            } throws: { "\($0)".contains("'blood_type' is not an input of version 1") }
            let scientist = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: try consortium.credentials("dana", .dataScientist))
            try await withGRPCClient(transport: scientist) { grpc in
                let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                let none = try await client.deployments(Fedgate_V1_DeploymentsRequest())
                #expect(none.deployments.isEmpty && none.running.isEmpty)
                await #expect { _ = try await client.deployModel(Fedgate_V1_DeployModelRequest()) } throws: { "\($0)".contains("may not call DeployModel") }
            }

            // Version 1: promotion is refused before a canary; the canary at hospital-0 passes its check.
            await #expect { _ = try await Self.deploy(1, "all", consortium, port: broker.port) } throws: { "\($0)".contains("had no canary") }
            _ = try await Self.deploy(1, "canary", silos: ["hospital-0"], consortium, port: broker.port)
            let canaryPassed = await eventually { await rollout().deployments.first?.state == .passed }
            let canaryChecks = await rollout().deployments.first?.checks ?? []
            #expect(canaryPassed, "\(canaryChecks)")
            // A promotion keeps the canary's gate: naming another is refused.
            await #expect {
                _ = try await withGRPCClient(transport: try Self.admin(consortium, port: broker.port)) { grpc in
                    var request = Fedgate_V1_DeployModelRequest()
                    (request.version, request.stage, request.watch) = (1, "all", ["mean_radius"])
                    return try await Fedgate_V1_Broker.Client(wrapping: grpc).deployModel(request)
                }
            } throws: { "\($0)".contains("keeps the canary's gate") }
            _ = try await Self.deploy(1, "all", consortium, port: broker.port)
            let promoted = await eventually { await rollout().deployments.last.map { d in d.state == .monitoring && d.checks.count == 2 } == true }
            let runningAfterPromotion = await rollout().running
            #expect(promoted && runningAfterPromotion == ["hospital-0": 1, "hospital-1": 1, "hospital-2": 1], "\(runningAfterPromotion)")

            // hospital-2's new rows have moved by two deviations; version 2 goes to it and hospital-0 as a canary.
            try Self.csv([shards[2].train, shards[2].test], shift: 2).write(to: fresh[2], atomically: true, encoding: .utf8)
            _ = try await Self.deploy(2, "canary", silos: ["hospital-0", "hospital-2"], consortium, port: broker.port)
            let rolledBack = await eventually { await rollout().deployments.last?.state == .rolledBack }
            let last = await rollout().deployments.last
            #expect(rolledBack, "\(last.map { ($0.state, $0.checks, $0.problems) }!)")
            let canary = try #require(await rollout().deployments.last)
            let alert = try #require(canary.alert)
            #expect(alert.silo == "hospital-2" && !alert.reasons.isEmpty && alert.reasons.allSatisfy { $0.hasPrefix("drift: ") }, "\(alert.reasons)")
            let seconds = try #require(canary.rollbackSeconds)
            print(String(format: "deployment rollback: alert at hospital-2 (%@) to both canary silos back on version 1 in %.3f s", alert.reasons.joined(separator: "; "), seconds))
            let runningAfterRollback = await rollout().running
            #expect(runningAfterRollback == ["hospital-0": 1, "hospital-1": 1, "hospital-2": 1], "\(runningAfterRollback)")
            await #expect { _ = try await Self.deploy(2, "all", consortium, port: broker.port) } throws: { "\($0)".contains("rolled back") }
            // Each gateway's own folder says it runs version 1 again (the rollback needed no download).
            for i in 0..<3 {
                let record = try DeployedModels(folder: consortium.file("deployed-\(i)")).current()
                let listing = (try? FileManager.default.contentsOfDirectory(atPath: consortium.file("deployed-\(i)").path)) ?? []
                #expect(record?.version == 1, "hospital-\(i): \(String(describing: record)) in \(listing)")
            }

            // The trail: the deployments, every answer and check, the alert and the rollback with its time.
            let records = try await brokerStore.auditRecords()
            #expect(records.filter { $0.action == "deploy.start" }.count == 3)
            let rolled = try #require(records.last { $0.action == "deploy.rolled_back" })
            guard case .deploymentRolledBack(let r)? = try? AuditEvent(action: rolled.action, payload: rolled.payload) else { Issue.record("unreadable"); return }
            #expect(r.version == 2 && abs(r.seconds - seconds) < 1e-6, "\(r) vs \(seconds)")
            #expect(records.contains { $0.action == "deploy.alert" && $0.subject == "hospital-2" })

            // Every reference and check that left a silo is one committed Gaussian event in its ledger, under the version's monitoring key.
            for i in 0..<3 {
                let messages = sent[i].all.compactMap { ($0 as? Fedgate_V1_GatewayMessage)?.kind }
                var released: [String] = []
                for kind in messages {
                    if case .deployed(let a) = kind, !a.reference.isEmpty { released.append(SiloPolicy.monitoringKey(version: Int(a.version))) }
                    if case .monitor(let m) = kind { released.append(SiloPolicy.monitoringKey(version: Int(m.version))) }
                }
                let ledger = try await silos[i].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.planHash.hasPrefix("monitor:") }
                #expect(ledger.allSatisfy { $0.state == .committed && $0.event == .gaussian(noiseMultiplier: 3) })
                #expect(ledger.map(\.planHash).sorted() == released.sorted(), "hospital-\(i): ledger \(ledger.map(\.planHash)) vs sent \(released)")
                #expect(!released.isEmpty)
            }
        }
    }

    @Test("a restarted broker replays the rollout from its audit trail: which version each silo runs, each deployment's state, checks and rollback time")
    func replayedAfterRestart() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let reference: [[Double]] = [[20, 40, 40, 20], [20, 40, 40, 20]]
        let clean: [Double] = [120, 100, 95] + [20, 40, 40, 20] + [20, 40, 40, 20]
        let moved: [Double] = [120, 100, 95] + [2, 8, 40, 70] + [20, 40, 40, 20]
        func audit(_ event: AuditEvent, _ actor: String, _ subject: String, _ seconds: Double) async throws {
            try await store.audit(event, actor: actor, subject: subject, at: t0.addingTimeInterval(seconds))
        }
        try await audit(.deploymentStarted(.init(deployment: 1, version: 1, stage: "canary", silos: ["a"], maxPSI: 0.25, significance: 0.001,
                                                  minAccuracy: nil, watch: ["x", "y"], positions: [0, 1])), "ada", "deployment 1", 0)
        try await audit(.deploymentAnswered(.init(deployment: 1, version: 1, rollback: false, problem: nil, reference: reference, sigma: 3)), "a", "a", 1)
        try await audit(.monitorChecked(.init(deployment: 1, version: 1, counts: clean, sigma: 3, accuracy: 0.95, psi: [:], reasons: [])), "a", "a", 2)
        try await audit(.deploymentStarted(.init(deployment: 2, version: 1, stage: "all", silos: ["a", "b"], maxPSI: 0.25, significance: 0.001,
                                                  minAccuracy: nil, watch: ["x", "y"], positions: [0, 1])), "ada", "deployment 2", 3)
        try await audit(.deploymentAnswered(.init(deployment: 2, version: 1, rollback: false, problem: nil, reference: reference, sigma: 3)), "b", "b", 4)
        try await audit(.deploymentStarted(.init(deployment: 3, version: 2, stage: "canary", silos: ["b"], maxPSI: 0.25, significance: 0.001,
                                                  minAccuracy: nil, watch: ["x", "y"], positions: [0, 1])), "ada", "deployment 3", 5)
        try await audit(.deploymentAnswered(.init(deployment: 3, version: 2, rollback: false, problem: nil, reference: reference, sigma: 3)), "b", "b", 6)
        try await audit(.monitorChecked(.init(deployment: 3, version: 2, counts: moved, sigma: 3, accuracy: 0.95, psi: [:], reasons: ["drift"])), "b", "b", 7)
        try await audit(.deploymentAnswered(.init(deployment: 3, version: 1, rollback: true, problem: nil, reference: nil, sigma: nil)), "b", "b", 7.5)

        let coordinator = BrokerCoordinator(store: store, logger: consortium.logger)
        _ = try await coordinator.recover()
        let rollout = await coordinator.deployments
        #expect(rollout.running == ["a": 1, "b": 1])
        #expect(rollout.deployments.map(\.state) == [.promoted, .monitoring, .rolledBack])
        #expect(rollout.deployments[2].rollbackSeconds == 0.5 && rollout.deployments[2].alert?.silo == "b")
        #expect(rollout.inProgress == nil && rollout.owed(to: "a") == nil)
    }
}
