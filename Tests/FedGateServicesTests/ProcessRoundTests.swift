import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import Synchronization
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Testing
@testable import FedGateConsortiumTesting

/// The `fedgate` program as real processes: a broker and three gateways started from their YAML
/// configs, a gateway killed with SIGKILL mid-round, everything stopped with SIGTERM.
@Suite("fedgate broker serve and gateway run as processes")
struct ProcessRoundTests {
    let processes = Processes()

    @Test("broker and three gateway processes, ten FedAvg rounds driven by `fedgate plan submit` and `plan watch`: the model from `fedgate model pull` scores the simulator's accuracy for the same seed")
    func tenRoundsAcrossProcesses() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "the broker did not start: \(broker.output)")
        let simulation = try Fixtures.simulation(seed: 1)
        let shards = try simulation.shards()
        let simulated = try simulation.run().final.accuracy
        var gateways: [Processes.Running] = []
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        for (i, shard) in shards.enumerated() {
            let config = try await processes.gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, test: shard.test, port: port)
            gateways.append(try Processes.Running(["gateway", "run", "--config", config.path], log: consortium.file("hospital-\(i).log"),
                                        environment: ["FEDGATE_TESTING_FIXED_NOISE": "1:\(i)"]))
        }
        await eventually { gateways.allConnected() }
        let client = try processes.scientist(consortium, port: port)
        try Fixtures.plan(rounds: 10, quorum: 3, evaluation: "{ min_accuracy: 0.9 }")
            .write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let submitted = try await processes.fedgate(["plan", "submit", consortium.file("plan.yaml").path] + client, consortium, log: "submit.log")
        #expect(submitted.status == 0, "\(submitted.output)")
        let hash = try #require(submitted.output.split(separator: "\n").first { $0.hasPrefix("plan ") }?.split(separator: " ")[1]).description
        for i in 0..<3 { #expect(submitted.output.contains("hospital-\(i): accepted"), "\(submitted.output)") }

        let watched = try await processes.fedgate(["plan", "watch", hash] + client, consortium, log: "watch.log")
        #expect(watched.status == 0 && watched.output.contains("round  10 committed"), "\(watched.output)")
        #expect(watched.output.contains("gate passed: model version 1"), "\(watched.output)")
        #expect(watched.output.contains("ε after round ") && watched.output.contains(": hospital-0 "), "the live view shows ε per silo: \(watched.output)")
        #expect(watched.output.contains("was the model before its update"), "the last round's figure is told apart from the final model's: \(watched.output)")

        let status = try await processes.fedgate(["plan", "status", hash, "--json"] + client, consortium, log: "status.log")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], "\(status.output)")
        #expect(json["state"] as? String == "finished" && (json["rounds"] as? [Any])?.count == 10)
        let evaluated = try #require(json["accuracy"] as? Double)

        let pulled = try await processes.fedgate(["model", "pull", "1", "--out", consortium.file("model.safetensors").path] + client, consortium, log: "pull.log")
        #expect(pulled.status == 0, "\(pulled.output)")
        let file = try [UInt8](Data(contentsOf: consortium.file("model.safetensors")))
        let parameters = try ModelPayload.modelParameters(file, dimension: Fixtures.data.featureCount + 1)
        let accuracy = try NetworkedRoundTests.pooledAccuracy(parameters, shards: shards, seed: 1)
        #expect(abs(accuracy - simulated) <= 0.01, "pulled model \(accuracy) vs simulator \(simulated)")
        #expect(abs(evaluated - accuracy) < 1e-9, "the silos' evaluation \(evaluated) is the pulled model's accuracy \(accuracy)")
        // A user with NumPy alone scores the held-out rows from what the file says (columns,
        // standardisation, layers): the same accuracy, up to a borderline row in float64.
        let heldOut = shards.map(\.test.csv).enumerated().map { $0.offset == 0 ? $0.element : String($0.element.drop { $0 != "\n" }.dropFirst()) }
        try heldOut.joined().write(to: consortium.file("held-out.csv"), atomically: true, encoding: .utf8)
        let scoring = try Processes.Running(["python3", Consortium.root.appendingPathComponent("examples/python/score.py").path,
                                             consortium.file("model.safetensors").path, consortium.file("held-out.csv").path,
                                             "--label", Fixtures.data.labelName], log: consortium.file("score.log"), executable: "/usr/bin/env")
        #expect(await scoring.exit(within: 60) == 0, "\(scoring.output)")
        let numpy = try #require(try JSONSerialization.jsonObject(with: Data(scoring.output.utf8)) as? [String: Any], "\(scoring.output)")
        let rows = try #require(numpy["rows"] as? Int), numpyAccuracy = try #require(numpy["accuracy"] as? Double)
        #expect(rows == shards.map(\.test.count).reduce(0, +) && abs(numpyAccuracy - accuracy) <= 1.0 / Double(rows), "NumPy \(numpyAccuracy), FedGate \(accuracy)")

        let listed = try await processes.fedgate(["model", "list"] + client, consortium, log: "list.log")
        #expect(listed.output.contains("v1   plan \(hash.prefix(12))… round 10"), "\(listed.output)")
        for g in gateways { g.signal(SIGTERM) }
        broker.signal(SIGTERM)
        for g in gateways { #expect(await g.exit(within: 10) == 0) }
        #expect(await broker.exit(within: 10) == 0)
    }

    @Test("fedgate demo: a refusal with its reason, then the example plan to the end: accuracy ≥ 0.93, and each silo's ε is what `fedgate privacy epsilon` computes for its ledger's events")
    func demo() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let folder = consortium.file("demo")
        let run = try await processes.fedgate(["demo", "--json", "--folder", folder.path], consortium, log: "demo.log", within: 300)
        #expect(run.status == 0, "\(run.output.suffix(3000))")
        // The JSON summary is the last thing printed (progress lines go to stderr, in the same log here).
        let start = try #require(run.output.range(of: "{\n  \"accuracy\"").map { run.output[$0.lowerBound...] }, "\(run.output.suffix(2000))")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(start.utf8)) as? [String: Any])
        let accuracy = try #require(summary["accuracy"] as? Double)
        #expect(accuracy >= 0.93 && summary["gate_passed"] as? Bool == true && summary["rounds"] as? Int == 10, "\(summary)")
        #expect((summary["refusal"] as? String)?.hasPrefix("clinic-east: purpose:") == true, "\(summary["refusal"] ?? "")")
        #expect(summary["audit_chains_intact"] as? Bool == true)
        let report = try String(contentsOfFile: try #require(summary["audit_report"] as? String), encoding: .utf8)
        #expect(report.contains("<svg") && report.contains("clinic-east"))
        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try #require(summary["model"] as? String))))
        #expect(try ModelPayload.modelParameters(file, dimension: 31).count == 31)

        let silos = try #require(summary["silos"] as? [[String: Any]])
        #expect(silos.compactMap { $0["silo"] as? String } == ["clinic-east", "hospital-north", "hospital-south"])
        for silo in silos {
            let spent = try #require(silo["epsilon"] as? Double)
            let command = try #require(silo["privacy_command"] as? String).split(separator: " ").dropFirst().map(String.init) + ["--json"]
            let computed = try await processes.fedgate(command, consortium, log: "privacy.log")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(computed.output.utf8)) as? [String: Any], "\(computed.output)")
            let epsilon = try #require(json["epsilon"] as? Double, "\(json)")
            #expect(abs(spent - epsilon) < 1e-9 && abs((silo["epsilon_from_ledger"] as? Double ?? -1) - epsilon) < 1e-9, "\(silo) vs \(epsilon)")
            #expect(spent <= (silo["epsilon_cap"] as? Double ?? 0))
        }
    }

    @Test("broker and three gateway processes: a gateway killed mid-round is dropped, the round commits on quorum, the silo rejoins the next; SIGTERM stops everyone cleanly")
    func killedGatewayRejoins() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "the broker did not start: \(broker.output)")

        let shards = try Fixtures.simulation(seed: 4).shards()
        var configs: [URL] = []
        for (i, shard) in shards.enumerated() { configs.append(try await processes.gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, port: port)) }
        var gateways = try configs.enumerated().map { i, c in
            try Processes.Running(["gateway", "run", "--config", c.path], log: consortium.file("hospital-\(i).log"))
        }
        defer { gateways.forEach { $0.signal(SIGKILL) } }

        let scientist = try consortium.credentials("dana", .dataScientist)
        let transport = { try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: scientist) }
        func connections() -> Int { gateways.reduce(0) { $0 + $1.connections() } }
        await eventually { connections() >= 3 }
        try #require(connections() == 3, "each gateway connected once: \(gateways.map(\.output))")
        func run(_ plan: String) async throws -> Fedgate_V1_PlanStatusResponse {
            try await withGRPCClient(transport: try transport()) { grpc in
                let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                var submit = Fedgate_V1_SubmitPlanRequest()
                submit.planYaml = plan
                var request = Fedgate_V1_PlanStatusRequest()
                request.planHash = try await client.submitPlan(submit).planHash
                for _ in 0..<6000 {
                    let s = try await client.planStatus(request)
                    if s.state != "running" { return s }
                    try await Task.sleep(for: .milliseconds(20))
                }
                return try await client.planStatus(request)
            }
        }

        // Freeze hospital-2 so it cannot answer, let the broker offer it round 1, then SIGKILL it mid-round.
        let frozen = gateways[2]
        frozen.signal(SIGSTOP)
        let brokerStore = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        let killer = Task {
            await eventually(every: .milliseconds(2)) {
                (try? await brokerStore.auditRecords().contains { $0.action == "round.offered" }) ?? false
            }
            frozen.signal(SIGKILL)
        }
        let first = try await run(Fixtures.plan(rounds: 1, quorum: 2, deadline: 30))
        await killer.value
        #expect(await gateways[2].exit(within: 5) != nil)
        #expect(first.state == "finished" && first.rounds.map(\.state) == ["committed"], "\(first)")
        #expect(first.rounds.first?.participants == ["hospital-0", "hospital-1"], "the killed silo was dropped: \(first.rounds)")

        // hospital-2 comes back and takes part in the next plan, which needs all three.
        gateways[2] = try Processes.Running(["gateway", "run", "--config", configs[2].path], log: consortium.file("hospital-2-again.log"))
        await eventually { gateways[2].connections() >= 1 }
        let second = try await run(Fixtures.plan(rounds: 2, quorum: 3, deadline: 30))
        #expect(second.state == "finished" && second.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 3 },
                "\(second.rounds.map { ($0.round, $0.state, $0.participants) }) \(second.reason)")

        // hospital-2's ledger: nothing left reserved; the second plan's statistics release and the two
        // rounds it took part in committed (it was frozen before it answered the first plan).
        let ledger = try SQLiteLedger(path: consortium.file("hospital-2.sqlite").path)
        let entries = try await ledger.entries(dataset: "breast-cancer-2024")
        #expect(!entries.contains { $0.state == .reserved }, "\(entries.map { ($0.round, $0.state) })")
        #expect(entries.filter { $0.state == .committed }.map(\.round).sorted() == [0, 1, 2], "\(entries.map { ($0.round, $0.state) })")

        // SIGTERM: graceful shutdown, exit status 0.
        for g in gateways { g.signal(SIGTERM) }
        broker.signal(SIGTERM)
        for g in gateways { #expect(await g.exit(within: 10) == 0, "\(g.output.suffix(1500))") }
        #expect(await broker.exit(within: 10) == 0, "\(broker.output.suffix(1500))")
        #expect(broker.output.contains("broker stopped"))
    }
}
