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

/// The `fedgate` program as real processes for the tests: a process with its log, a broker and
/// gateways started from their YAML configs, a plan submitted alongside, a command run to its end.
struct Processes {
    /// A TCP port free right now on loopback (for a process that must be told its port before it listens).
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

    static var fedgate: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fedgate")
    }

    /// A running `fedgate` process with its output in a file.
    final class Running: @unchecked Sendable {
        let process: SpawnedProcess
        let log: URL

        /// `fedgate` (or another `executable`) with `arguments`, in the package's root, leading its own process group.
        init(_ arguments: [String], log: URL, environment: [String: String] = [:], executable: String? = nil) throws {
            self.log = log
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process = try SpawnedProcess(executable: executable ?? Processes.fedgate.path, arguments: arguments,
                                         environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                                         directory: Consortium.root.path, output: log.path)
        }

        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        /// How often this gateway process said it connected (its readiness line), to any broker or
        /// to the one on `port`.
        func connections(port: Int? = nil) -> Int {
            output.split(separator: "\n").filter { $0.hasPrefix("gateway ") && $0.contains(" connected to broker \(port.map { "127.0.0.1:\($0)" } ?? "")") }.count
        }

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

    /// Three gateway processes, one per shard of `Fixtures.simulation(seed:)`, each told
    /// the broker's `port`; `edit` may rewrite each config's text (standbys, metrics). If one cannot
    /// start, those already started are stopped.
    func startGateways(_ consortium: Consortium, seed: UInt64, port: Int, brokerStore: String = "sqlite:broker.sqlite",
                       edit: (String) -> String = { $0 }) async throws -> [Running] {
        var started: [Running] = []
        do {
            for (i, shard) in try Fixtures.simulation(seed: seed).shards().enumerated() {
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
        try Fixtures.policy(silo: id, program: program).write(to: consortium.file("\(id)-policy.yaml"), atomically: true, encoding: .utf8)
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

extension Processes.Running {
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

extension Processes {

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
        let text = Fixtures.plan(rounds: rounds, quorum: 3, deadline: deadline)
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
}

extension Array where Element == Processes.Running {
    /// Whether every one of these gateway processes is connected (its readiness line), optionally to the broker on `port`.
    func allConnected(port: Int? = nil) -> Bool { allSatisfy { $0.connections(port: port) >= 1 } }
}
