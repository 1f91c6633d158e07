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

/// The `fedgate` program as real processes: a broker and three gateways started from their YAML
/// configs, a gateway killed with SIGKILL mid-round, everything stopped with SIGTERM.
@Suite("fedgate broker serve and gateway run as processes")
struct ProcessRoundTests {
    static var fedgate: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fedgate")
    }

    /// A running `fedgate` process with its output in a file.
    final class Running: @unchecked Sendable {
        let process = Process()
        let log: URL

        /// `fedgate` (or another `executable`) with `arguments`.
        init(_ arguments: [String], log: URL, environment: [String: String] = [:], executable: String? = nil) throws {
            self.log = log
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = executable.map(URL.init(fileURLWithPath:)) ?? ProcessRoundTests.fedgate
            process.arguments = arguments
            if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
            process.currentDirectoryURL = Consortium.root
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        func signal(_ s: Int32) { kill(process.processIdentifier, s) }

        /// When the process (started with `FEDGATE_TESTING_CRASH_AT=…:stop`) reaches its `n`th test
        /// pause point, runs `act` and lets the process go on (SIGCONT). A thread of its own watches
        /// the log, so a test process whose task pool is busy does not keep the broker frozen.
        func onPause(_ n: Int, within seconds: Double = 180, _ act: @escaping @Sendable () -> Void) -> PauseWatch {
            let watch = PauseWatch()
            let (log, pid) = (self.log, process.processIdentifier)
            Thread {
                let until = Date().addingTimeInterval(seconds)
                guard let file = try? FileHandle(forReadingFrom: log) else { return }
                defer { try? file.close() }
                var seen = 0, partial = ""
                while Date() < until {
                    // Only what was written since the last look; a line still being written waits.
                    partial += String(decoding: (try? file.readToEnd()) ?? Data(), as: UTF8.self)
                    let lines = partial.split(separator: "\n", omittingEmptySubsequences: false)
                    partial = String(lines.last ?? "")
                    seen += lines.dropLast().filter { $0.contains("test pause point reached") }.count
                    if seen >= n {
                        act()
                        watch.acted.withLock { $0 = Date() }
                        // The process logs the line, then stops itself: a SIGCONT sent in between
                        // would come first and leave it stopped for good (seen on a loaded machine).
                        while Date() < until, !Running.isStopped(pid) { usleep(1_000) }
                        kill(pid, SIGCONT)
                        return
                    }
                    usleep(5_000)
                }
            }.start()
            return watch
        }

        /// Whether the process is stopped by a signal (its state in /proc is `T`).
        static func isStopped(_ pid: pid_t) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(after: close)...].split(separator: " ").first == "T"
        }

        final class PauseWatch: Sendable {
            let acted = Mutex<Date?>(nil)
            /// When the action ran, waiting up to `seconds` for it.
            func wait(within seconds: Double = 180) async -> Date? {
                await eventually(seconds: seconds, every: .milliseconds(20)) { self.acted.withLock { $0 != nil } }
                return acted.withLock { $0 }
            }
        }

        /// Waits for the process to exit, up to `seconds`; its status, or nil if it is still running.
        func exit(within seconds: Double) async -> Int32? {
            let until = Date().addingTimeInterval(seconds)
            while process.isRunning, Date() < until { try? await Task.sleep(for: .milliseconds(20)) }
            return process.isRunning ? nil : process.terminationStatus
        }
    }

    /// Three gateway processes, one per shard of `NetworkedRoundTests.simulation(seed:)`, each told
    /// the broker's `port`; `edit` may rewrite each config's text (standbys, metrics). If one cannot
    /// start, those already started are stopped.
    func startGateways(_ consortium: Consortium, seed: UInt64, port: Int, brokerStore: String = "sqlite:broker.sqlite",
                       edit: (String) -> String = { $0 }) async throws -> [Running] {
        var started: [Running] = []
        do {
            for (i, shard) in try NetworkedRoundTests.simulation(seed: seed).shards().enumerated() {
                let config = try await gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, port: port, brokerStore: brokerStore)
                let text = try String(contentsOf: config, encoding: .utf8)
                if edit(text) != text { try edit(text).write(to: config, atomically: true, encoding: .utf8) }
                started.append(try Running(["gateway", "run", "--config", config.path], log: consortium.file("hospital-\(i).log")))
            }
        } catch {
            started.forEach { $0.signal(SIGKILL) }
            throw error
        }
        return started
    }

    /// A gateway's config, data and store for silo `id`, its certificate issued and enrolled in the
    /// broker's store (`brokerStore`, as the broker's config names it).
    func gatewayConfig(_ consortium: Consortium, _ id: String, shard: Dataset, test: Dataset? = nil, port: Int,
                       program: String? = nil, brokerStore: String = "sqlite:broker.sqlite") async throws -> URL {
        try shard.csv.write(to: consortium.file("\(id).csv"), atomically: true, encoding: .utf8)
        if let test { try test.csv.write(to: consortium.file("\(id)-test.csv"), atomically: true, encoding: .utf8) }
        try NetworkedRoundTests.policy(silo: id, program: program).write(to: consortium.file("\(id)-policy.yaml"), atomically: true, encoding: .utf8)
        let store = try await consortium.store(id)
        try await store.save(DatasetBudget(name: "breast-cancer-2024", delta: 1e-5, perPlanCap: 5, lifetimeCap: 20), actor: "admin")
        try await store.addConsent(ConsentRecord(dataset: "breast-cancer-2024", purpose: "research", legalBasis: "consent",
                                                 scope: "all patients", validFrom: Date().addingTimeInterval(-86_400)), actor: "admin")
        _ = try await consortium.enrolledSilo(id, in: try await consortium.registry(brokerStore))
        let config = consortium.file("\(id).yaml")
        try """
        silo: \(id)
        broker: { host: 127.0.0.1, port: \(port), name: broker }
        tls: { certificate: \(id).pem, key: \(id).key, ca: ca.pem }
        store: sqlite:\(id).sqlite
        migrations: \(Consortium.migrations.path)
        policy: \(id)-policy.yaml
        dataset: { name: breast-cancer-2024, csv: \(id).csv, label: malignant, \(test == nil ? "test_fraction: 0.2" : "test_csv: \(id)-test.csv") }
        learning_rate: 0.5
        """.write(to: config, atomically: true, encoding: .utf8)
        return config
    }

    /// Starts `fedgate broker serve` from a config in the consortium folder; its port once it listens
    /// (0 if it did not within `seconds`: a standby waits for the lease before it listens).
    func startBroker(_ consortium: Consortium, port: Int = 0, instance: String = "broker-a", store: String = "sqlite:broker.sqlite",
                     leaseSeconds: Double = 10, silentAfter: Double = 2, environment: [String: String] = [:], log: String = "broker.log",
                     extra: String = "", within seconds: Double = 180) async throws -> (Running, Int) {
        _ = try consortium.credentials("broker", .broker)
        let config = consortium.file("\(instance).yaml")
        try """
        id: broker
        listen: { host: 127.0.0.1, port: \(port) }
        tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
        store: \(store)
        migrations: \(Consortium.migrations.path)
        heartbeat_seconds: 0.2
        silent_after_seconds: \(silentAfter)
        high_availability: { instance: \(instance), lease_seconds: \(leaseSeconds) }
        \(extra)
        """.write(to: config, atomically: true, encoding: .utf8)
        let broker = try Running(["broker", "serve", "--config", config.path], log: consortium.file(log), environment: environment)
        return (broker, await broker.listeningPort(within: seconds))
    }
}

extension ProcessRoundTests.Running {
    /// The port of a `fedgate broker serve` once it says it listens; 0 if not within `seconds`.
    func listeningPort(within seconds: Double) async -> Int {
        func said() -> Int? {
            guard let line = output.split(separator: "\n").first(where: { $0.contains("listening on") }) else { return nil }
            return line.split(separator: ":").last.flatMap { Int($0) }
        }
        let until = Date().addingTimeInterval(seconds)
        // Read once more after the process ended: a broker may say it listens and exit (a test's
        // crash point) between two looks.
        while Date() < until, process.isRunning {
            if let port = said() { return port }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return said() ?? 0
    }
}

extension ProcessRoundTests {

    /// A data scientist's certificate (dana's, issued here) as the `fedgate` client options for the broker on `port`.
    func scientist(_ consortium: Consortium, port: Int) throws -> [String] {
        _ = try consortium.credentials("dana", .dataScientist)
        return ["--broker", "127.0.0.1:\(port)", "--cert", consortium.file("dana.pem").path, "--key", consortium.file("dana.key").path,
                "--ca", consortium.file("ca.pem").path]
    }

    /// Writes a plan of `rounds` to plan.yaml and starts `fedgate plan submit` for it without waiting:
    /// a broker that freezes at a pause point while the client still talks to it must be acted on at
    /// once, not after the client's keepalive gives up. The plan's hash, and the running client.
    func submitAlongside(_ consortium: Consortium, port: Int, rounds: Int, deadline: Int) throws -> (hash: String, client: Running) {
        let text = NetworkedRoundTests.plan(rounds: rounds, quorum: 3, deadline: deadline)
        try text.write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let hash = try TrainingPlan.parse(text, file: "plan.yaml").contentHash
        return (hash, try Running(["plan", "submit", consortium.file("plan.yaml").path] + scientist(consortium, port: port), log: consortium.file("submit.log")))
    }

    /// Runs one `fedgate` command to its end: its exit status and output.
    func fedgate(_ arguments: [String], _ consortium: Consortium, log: String, within seconds: Double = 120) async throws -> (status: Int32?, output: String) {
        let run = try Running(arguments, log: consortium.file(log))
        let status = await run.exit(within: seconds)
        if status == nil { run.signal(SIGKILL) }
        return (status, run.output)
    }

    @Test("broker and three gateway processes, ten FedAvg rounds driven by `fedgate plan submit` and `plan watch`: the model from `fedgate model pull` scores the simulator's accuracy for the same seed")
    func tenRoundsAcrossProcesses() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "the broker did not start: \(broker.output)")
        let simulation = try NetworkedRoundTests.simulation(seed: 1)
        let shards = try simulation.shards()
        let simulated = try simulation.run().final.accuracy
        var gateways: [Running] = []
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        for (i, shard) in shards.enumerated() {
            let config = try await gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, test: shard.test, port: port)
            gateways.append(try Running(["gateway", "run", "--config", config.path], log: consortium.file("hospital-\(i).log"),
                                        environment: ["FEDGATE_TESTING_FIXED_NOISE": "1:\(i)"]))
        }
        await eventually { broker.output.components(separatedBy: "gateway connected").count - 1 >= 3 }
        let client = try scientist(consortium, port: port)
        try NetworkedRoundTests.plan(rounds: 10, quorum: 3, evaluation: "{ min_accuracy: 0.9 }")
            .write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let submitted = try await fedgate(["plan", "submit", consortium.file("plan.yaml").path] + client, consortium, log: "submit.log")
        #expect(submitted.status == 0, "\(submitted.output)")
        let hash = try #require(submitted.output.split(separator: "\n").first { $0.hasPrefix("plan ") }?.split(separator: " ")[1]).description
        for i in 0..<3 { #expect(submitted.output.contains("hospital-\(i): accepted"), "\(submitted.output)") }

        let watched = try await fedgate(["plan", "watch", hash] + client, consortium, log: "watch.log")
        #expect(watched.status == 0 && watched.output.contains("round  10 committed"), "\(watched.output)")
        #expect(watched.output.contains("gate passed: model version 1"), "\(watched.output)")
        #expect(watched.output.contains("ε so far: hospital-0 "), "the live view shows ε per silo: \(watched.output)")

        let status = try await fedgate(["plan", "status", hash, "--json"] + client, consortium, log: "status.log")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], "\(status.output)")
        #expect(json["state"] as? String == "finished" && (json["rounds"] as? [Any])?.count == 10)
        let evaluated = try #require(json["accuracy"] as? Double)

        let pulled = try await fedgate(["model", "pull", "1", "--out", consortium.file("model.safetensors").path] + client, consortium, log: "pull.log")
        #expect(pulled.status == 0, "\(pulled.output)")
        let file = try [UInt8](Data(contentsOf: consortium.file("model.safetensors")))
        let parameters = try ModelPayload.parameters(file, tensor: "parameters", dimension: NetworkedRoundTests.data.featureCount + 1)
        let accuracy = try NetworkedRoundTests.pooledAccuracy(parameters, shards: shards)
        #expect(abs(accuracy - simulated) <= 0.01, "pulled model \(accuracy) vs simulator \(simulated)")
        #expect(abs(evaluated - accuracy) < 1e-9, "the silos' evaluation \(evaluated) is the pulled model's accuracy \(accuracy)")

        let listed = try await fedgate(["model", "list"] + client, consortium, log: "list.log")
        #expect(listed.output.contains("v1   plan \(hash.prefix(12))… round 10"), "\(listed.output)")
        for g in gateways { g.signal(SIGTERM) }
        broker.signal(SIGTERM)
        for g in gateways { #expect(await g.exit(within: 10) == 0) }
        #expect(await broker.exit(within: 10) == 0)
    }

    @Test("fedgate demo: a refusal with its reason, then the example plan to the end: accuracy ≥ 0.93, and each silo's ε is what `fedgate privacy epsilon` computes for its ledger's events")
    func demo() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let folder = consortium.file("demo")
        let run = try await fedgate(["demo", "--json", "--folder", folder.path], consortium, log: "demo.log", within: 300)
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
        #expect(try ModelPayload.parameters(file, tensor: "parameters", dimension: 31).count == 31)

        let silos = try #require(summary["silos"] as? [[String: Any]])
        #expect(silos.compactMap { $0["silo"] as? String } == ["clinic-east", "hospital-north", "hospital-south"])
        for silo in silos {
            let spent = try #require(silo["epsilon"] as? Double)
            let command = try #require(silo["privacy_command"] as? String).split(separator: " ").dropFirst().map(String.init) + ["--json"]
            let computed = try await fedgate(command, consortium, log: "privacy.log")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(computed.output.utf8)) as? [String: Any], "\(computed.output)")
            let epsilon = try #require(json["epsilon"] as? Double, "\(json)")
            #expect(abs(spent - epsilon) < 1e-9 && abs((silo["epsilon_from_ledger"] as? Double ?? -1) - epsilon) < 1e-9, "\(silo) vs \(epsilon)")
            #expect(spent <= (silo["epsilon_cap"] as? Double ?? 0))
        }
    }

    @Test("broker and three gateway processes: a gateway killed mid-round is dropped, the round commits on quorum, the silo rejoins the next; SIGTERM stops everyone cleanly")
    func killedGatewayRejoins() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "the broker did not start: \(broker.output)")

        let shards = try NetworkedRoundTests.simulation(seed: 4).shards()
        var configs: [URL] = []
        for (i, shard) in shards.enumerated() { configs.append(try await gatewayConfig(consortium, "hospital-\(i)", shard: shard.train, port: port)) }
        var gateways = try configs.enumerated().map { i, c in
            try Running(["gateway", "run", "--config", c.path], log: consortium.file("hospital-\(i).log"))
        }
        defer { gateways.forEach { $0.signal(SIGKILL) } }

        let scientist = try consortium.credentials("dana", .dataScientist)
        let transport = { try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: scientist) }
        func connections() -> Int { broker.output.components(separatedBy: "gateway connected").count - 1 }
        await eventually { connections() >= 3 }
        try #require(connections() == 3, "\(broker.output)")
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
        let first = try await run(NetworkedRoundTests.plan(rounds: 1, quorum: 2, deadline: 30))
        await killer.value
        #expect(await gateways[2].exit(within: 5) != nil)
        #expect(first.state == "finished" && first.rounds.map(\.state) == ["committed"], "\(first)")
        #expect(first.rounds.first?.participants == ["hospital-0", "hospital-1"], "the killed silo was dropped: \(first.rounds)")

        // hospital-2 comes back and takes part in the next plan, which needs all three.
        gateways[2] = try Running(["gateway", "run", "--config", configs[2].path], log: consortium.file("hospital-2-again.log"))
        await eventually { connections() >= 4 }
        let second = try await run(NetworkedRoundTests.plan(rounds: 2, quorum: 3, deadline: 30))
        #expect(second.state == "finished" && second.rounds.allSatisfy { $0.state == "committed" && $0.participants.count == 3 },
                "\(second.rounds.map { ($0.round, $0.state, $0.participants) }) \(second.reason)")

        // hospital-2's ledger: nothing left reserved; exactly the two rounds it took part in committed.
        let ledger = try SQLiteLedger(path: consortium.file("hospital-2.sqlite").path)
        let entries = try await ledger.entries(dataset: "breast-cancer-2024")
        #expect(!entries.contains { $0.state == .reserved }, "\(entries.map { ($0.round, $0.state) })")
        #expect(entries.filter { $0.state == .committed }.count == 2)

        // SIGTERM: graceful shutdown, exit status 0.
        for g in gateways { g.signal(SIGTERM) }
        broker.signal(SIGTERM)
        for g in gateways { #expect(await g.exit(within: 10) == 0, "\(g.output.suffix(1500))") }
        #expect(await broker.exit(within: 10) == 0, "\(broker.output.suffix(1500))")
        #expect(broker.output.contains("broker stopped"))
    }
}
