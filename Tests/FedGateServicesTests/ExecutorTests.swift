import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import FedGateServices
import FedGateStore
import Foundation
import Logging
import Testing
@testable import FedGateConsortiumTesting

/// A silo's own training program (the NumPy example in examples/executors), run by the gateway in a
/// private folder with a time and a memory limit; the gateway clips, noises, accounts and uploads.
@Suite("External executor: a silo's own training program")
struct ExecutorTests {
    static let example = Consortium.root.appendingPathComponent("examples/executors/numpy_sgd.py").path
    let logger = Logger(label: "test.executor")

    func numpyAvailable() -> Bool {
        let ok = system("python3 -c 'import numpy' >/dev/null 2>&1") == 0
        if !ok && ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must run the executor tests: python3 with NumPy is missing") }
        return ok
    }

    var rows: Dataset {
        var d = Fixtures.data
        d.standardise(Standardisation(of: d))
        return d
    }

    func task(steps: Int = 30) -> [String: any Sendable] {
        ["plan_hash": "test", "round": 1, "model": "logistic", "layer_sizes": [rows.featureCount, 1], "classes": 2, "label": "malignant",
         "columns": rows.featureNames, "learning_rate": 0.5, "local_steps": steps, "sampling_rate": 0.1, "seed": 1, "standardised": true]
    }

    func program(_ command: [String], seconds: Double = 60, megabytes: Int = 2048) -> ExternalExecutor {
        ExternalExecutor(name: "numpy", program: ExecutorProgram(command: command, timeLimitSeconds: seconds, memoryLimitMB: megabytes))
    }

    @Test("the NumPy example trains logistic regression from the global model: an update of the model's size that lifts training accuracy, and its metrics")
    func numpyExampleTrains() async throws {
        guard numpyAvailable() else { return }
        let data = rows
        let global = try Network(kind: .logistic, inputs: data.featureCount, classes: 2, seed: 0)
        let out = try await program(["python3", Self.example]).run(model: try ModelPayload.flatModel(global), task: task(), train: data,
                                                                   dimension: global.parameters.count, logger: logger)
        #expect(out.delta.count == global.parameters.count && out.examples == data.count)
        #expect(out.metrics["train_loss"].map { $0 > 0 && $0 < 0.7 } == true, "\(out.metrics)")
        var trained = global
        for k in trained.parameters.indices { trained.parameters[k] += out.delta[k] }
        #expect(trained.evaluate(data).accuracy > 0.9, "accuracy \(trained.evaluate(data).accuracy)")
    }

    @Test("a program over its time limit is killed and the round's update refused, within a moment of the limit")
    func timeLimit() async throws {
        let error = await #expect(throws: ExternalExecutor.Failure.self) {
            _ = try await program(["sleep", "30"], seconds: 1).run(model: [], task: task(), train: rows, dimension: 31, logger: logger)
        }
        // Killed at the limit, long before the program's own 30 s, as timed by the executor's reaper
        // thread from the spawn to the reaping (the test's own clock would count any wait of the
        // test's task pool on a loaded machine too).
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("exceeded its time limit of 1.0 s and was killed after "), "\(text)")
        let after = text.components(separatedBy: "killed after ").last.flatMap { Double($0.prefix { $0 != " " }) }
        #expect(after.map { $0 >= 1 && $0 < 5 } == true, "killed after \(after.map { "\($0)" } ?? "?") s: \(text)")
    }

    @Test("a program over its memory limit fails, and the failure names the limit and what the program said")
    func memoryLimit() async throws {
        do {
            _ = try await program(["python3", "-c", "x = bytearray(1 << 30)"], megabytes: 128).run(model: [], task: task(), train: rows,
                                                                                                 dimension: 31, logger: logger)
            Issue.record("a 1 GiB allocation under a 128 MiB limit succeeded")
        } catch {
            #expect("\(error)".contains("exited with status 1") && "\(error)".contains("MemoryError") && "\(error)".contains("128 MiB"), "\(error)")
        }
    }

    @Test("what a program writes back is checked: a NaN update, a wrong shape, a missing file or bad metrics are refused with the reason")
    func outputsChecked() async throws {
        let header = #"import json,struct,sys; d=[float('nan')]+[0.0]*30; h=json.dumps({'delta':{'dtype':'F32','shape':[N],'data_offsets':[0,4*N]}}).encode(); open('update.safetensors','wb').write(struct.pack('<Q',len(h))+h+struct.pack('<'+str(N)+'f',*d[:N]))"#
        let cases: [(String, String)] = [
            (header.replacingOccurrences(of: "N", with: "31") + "; json.dump({'examples': 10}, open('metrics.json','w'))", "NaN"),
            (header.replacingOccurrences(of: "N", with: "7").replacingOccurrences(of: "float('nan')", with: "0.0") + "; json.dump({'examples': 10}, open('metrics.json','w'))", "expected F32 [31]"),
            ("pass", "wrote no update.safetensors"),
            (header.replacingOccurrences(of: "N", with: "31").replacingOccurrences(of: "float('nan')", with: "0.0") + "; json.dump({'examples': 10**9}, open('metrics.json','w'))", "'examples' must be"),
        ]
        for (code, reason) in cases {
            do {
                _ = try await program(["python3", "-c", code]).run(model: [], task: task(), train: rows, dimension: 31, logger: logger)
                Issue.record("accepted: \(reason)")
            } catch {
                #expect("\(error)".contains(reason), "\(error)")
            }
        }
    }

    @Test("three gateway processes run a plan with `executor: numpy`: each round's update comes from the NumPy program, the gateway clips and noises it and the ledger records the Gaussian mechanism at half the plan's multiplier")
    func planWithExecutorAcrossProcesses() async throws {
        guard numpyAvailable() else { return }
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let processes = Processes()
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let shards = try Fixtures.simulation(seed: 9).shards()
        var gateways: [Processes.Running] = []
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        for (i, shard) in shards.enumerated() {
            let config = try await processes.gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, test: shard.test, port: port,
                                                           program: Self.example)
            // Each gateway's working folders go under a temporary folder of its own, to check they are removed.
            let temporary = consortium.file("tmp-\(i)")
            try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
            gateways.append(try .init(["gateway", "run", "--config", config.path], log: consortium.file("hospital-\(i).log"),
                                      environment: ["TMPDIR": temporary.path]))
        }
        await eventually { gateways.allConnected() }
        let client = try processes.scientist(consortium, port: port)
        // Noise on a whole update is costly: σ = 4 (counted as 2) keeps two rounds under the per-plan cap of 5.
        let text = Fixtures.plan(rounds: 2, quorum: 3, deadline: 60, executor: "numpy")
            .replacingOccurrences(of: "noise_multiplier: 2.34", with: "noise_multiplier: 4.0")
        try text.write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let submitted = try await processes.fedgate(["plan", "submit", consortium.file("plan.yaml").path] + client, consortium, log: "submit.log")
        let hash = try #require(submitted.output.split(separator: "\n").first { $0.hasPrefix("plan ") }?.split(separator: " ")[1], "\(submitted.output)").description
        let watched = try await processes.fedgate(["plan", "watch", hash] + client, consortium, log: "watch.log")
        #expect(watched.output.contains("round   2 committed"), "\(watched.output) \(gateways[0].output.suffix(1500))")
        for i in 0..<3 {
            #expect(gateways[i].output.contains("executor finished"), "\(gateways[i].output.suffix(1500))")
            let ledger = try SQLiteLedger(path: consortium.file("hospital-\(i).sqlite").path)
            // Round 0 is the plan's statistics release (its own multiplier); rounds 1 and 2 the program's updates.
            let entries = try await ledger.entries(dataset: "breast-cancer-2024").filter { $0.planHash == hash && $0.state == .committed }
            let rounds = entries.filter { $0.round > 0 }
            #expect(rounds.count == 2 && rounds.allSatisfy { $0.event == .gaussian(noiseMultiplier: 2) }, "\(entries.map(\.event))")
            #expect(entries.filter { $0.round == 0 }.map(\.event) == [.gaussian(noiseMultiplier: Fixtures.statisticsNoise)])
        }
        for i in 0..<3 {
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: consortium.file("tmp-\(i)").path)
            #expect(!leftovers.contains { $0.hasPrefix("fedgate-executor-") }, "working folders are removed after each run: \(leftovers)")
        }
    }
}
