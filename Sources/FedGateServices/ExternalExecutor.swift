import CFedGateSystem
import FedGateLearning
import FedGatePolicy
import FedGateTensors
import Foundation
import Logging

/// Runs a silo's own training program for one round. The gateway writes the global model
/// (`model.safetensors`), the task (`task.json`) and the plan's columns of its training rows,
/// standardised (`train.csv`), into a private working folder (mode 0700, removed afterwards),
/// runs the program there with a time limit and an address-space limit and a bare environment, and
/// reads back `update.safetensors` (one F32 tensor `delta`, the change to the model) and
/// `metrics.json` (`examples` and any other numbers). The program never sees a key, the ledger or
/// the network; clipping, noise, accounting and the upload stay with the gateway.
public struct ExternalExecutor: Sendable {
    public let name: String
    public let program: ExecutorProgram

    public struct Output: Sendable {
        public let delta: [Float]
        public let examples: Int
        public let metrics: [String: Double]
    }

    /// The program failed, overran a limit or wrote something unusable; names which and why.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Starts `arguments` with `environment` only, stdin from /dev/null, stdout and stderr to `output`,
    /// and no descriptor of the gateway's but the standard three (its store, its sockets and its key
    /// files stay out of the program's reach even where they were opened without close-on-exec).
    private static func spawn(_ arguments: [String], environment: [String], output: String) throws -> pid_t {
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = fedgate_spawn(&pid, arguments[0], argv, envp, nil, output, 0)
        guard rc == 0 else { throw Failure(description: "cannot start \(arguments.dropFirst(6).joined(separator: " ")): \(String(cString: strerror(rc)))") }
        return pid
    }

    public init(name: String, program: ExecutorProgram) {
        self.name = name
        self.program = program
    }

    public func run(model: [UInt8], task: [String: any Sendable], train: Dataset, dimension: Int, logger: Logger) async throws -> Output {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-executor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: folder) }
        try prepare(folder, model: model, task: task, train: train)

        let log = folder.appendingPathComponent("program.log")
        // The working folder and the address-space limit are set by the shell, which then becomes
        // the program (`exec`); the command's words are passed as arguments, never parsed by it.
        let arguments = ["/bin/sh", "-c", "cd \"$1\" || exit 96; ulimit -v \"$2\" || exit 97; shift 2; exec \"$@\"", "fedgate-executor",
                         folder.path, "\(program.memoryLimitMB * 1024)"] + program.command
        let environment = ["PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")", "HOME=\(folder.path)",
                           "LANG=C.UTF-8", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "FEDGATE_TASK=\(folder.appendingPathComponent("task.json").path)"]
        let spawned = Date()
        let pid = try Self.spawn(arguments, environment: environment, output: log.path)
        let (status, overran, ran) = await Self.reap(pid, spawned: spawned, limit: program.timeLimitSeconds)
        let seconds = (ran * 10).rounded() / 10
        if overran {
            throw Failure(description: "executor '\(name)' exceeded its time limit of \(program.timeLimitSeconds) s and was killed after \(seconds) s")
        }
        let tail = String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(1500))
        let signal = status & 0x7f, code = (status >> 8) & 0xff
        guard signal == 0, code == 0 else {
            let how = signal == 0 ? "exited with status \(code)" : "was killed by signal \(signal)"
            throw Failure(description: "executor '\(name)' \(how) after \(seconds) s (memory limit \(program.memoryLimitMB) MiB): \(tail)")
        }
        logger.info("executor finished", metadata: ["executor": "\(name)", "seconds": "\(seconds)"])
        return try output(in: folder, train: train, dimension: dimension)
    }

    /// The working folder's inputs: the model, `task.json` (the task with the files' names) and the rows.
    private func prepare(_ folder: URL, model: [UInt8], task: [String: any Sendable], train: Dataset) throws {
        func write(_ name: String, _ data: Data) throws {
            guard FileManager.default.createFile(atPath: folder.appendingPathComponent(name).path, contents: data, attributes: [.posixPermissions: 0o600]) else {
                throw Failure(description: "executor '\(self.name)': cannot write \(name) in its working folder")
            }
        }
        var described = task
        described["files"] = ["model": "model.safetensors", "train": "train.csv", "update": "update.safetensors", "metrics": "metrics.json"]
        try write("model.safetensors", Data(model))
        try write("task.json", try JSONSerialization.data(withJSONObject: described, options: [.sortedKeys, .prettyPrinted]))
        try write("train.csv", Data(train.csv.utf8))
    }

    /// Waits for the program: its wait status, whether it overran `limit` (and was killed), and how
    /// long it ran. A thread of its own keeps the time limit, reaps the child with `waitpid` and
    /// times it: neither the task pool nor Dispatch nor Foundation's SIGCHLD handling (each seen
    /// stalled for a minute under a loaded test run) decides when a program is killed, whether it
    /// overran, or how long it ran. Cancelling the task kills the program.
    private static func reap(_ pid: pid_t, spawned: Date, limit: Double) async -> (Int32, Bool, TimeInterval) {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<(Int32, Bool, TimeInterval), Never>) in
                Thread {
                    let deadline = spawned.addingTimeInterval(limit)
                    var status: Int32 = 0
                    while true {
                        let reaped = waitpid(pid, &status, WNOHANG)
                        if reaped == pid || (reaped < 0 && errno != EINTR) {
                            return done.resume(returning: (status, false, Date().timeIntervalSince(spawned)))
                        }
                        if Date() >= deadline {
                            kill(pid, SIGKILL)
                            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                            return done.resume(returning: (status, true, Date().timeIntervalSince(spawned)))
                        }
                        usleep(10_000)
                    }
                }.start()
            }
        } onCancel: { kill(pid, SIGKILL) }
    }

    /// What the program wrote back, checked: a finite update of the model's shape, and metrics
    /// that are finite numbers, with `examples` a whole number of at most the training rows.
    private func output(in folder: URL, train: Dataset, dimension: Int) throws -> Output {
        guard let update = FileManager.default.contents(atPath: folder.appendingPathComponent("update.safetensors").path) else {
            throw Failure(description: "executor '\(name)' wrote no update.safetensors")
        }
        let delta: [Float]
        do { delta = try ModelPayload.parameters([UInt8](update), tensor: "delta", dimension: dimension) } catch {
            throw Failure(description: "executor '\(name)': update.safetensors: \(error)")
        }
        guard delta.allSatisfy(\.isFinite) else { throw Failure(description: "executor '\(name)': the update holds NaN or infinite values") }
        guard let metricsData = FileManager.default.contents(atPath: folder.appendingPathComponent("metrics.json").path),
              let object = try? JSONSerialization.jsonObject(with: metricsData) as? [String: Any] else {
            throw Failure(description: "executor '\(name)': metrics.json is missing or not a JSON object")
        }
        var metrics: [String: Double] = [:]
        for (key, value) in object.prefix(32) {
            guard let number = (value as? NSNumber)?.doubleValue, number.isFinite, key.count <= 64 else {
                throw Failure(description: "executor '\(name)': metrics.json: '\(key.prefix(64))' must be a finite number")
            }
            metrics[key] = number
        }
        guard let examples = metrics.removeValue(forKey: "examples"), examples >= 1, examples <= Double(train.count), examples == examples.rounded() else {
            throw Failure(description: "executor '\(name)': metrics.json: 'examples' must be a whole number from 1 to the \(train.count) training rows")
        }
        return Output(delta: delta, examples: Int(examples), metrics: metrics)
    }
}
