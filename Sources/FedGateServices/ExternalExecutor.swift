import FedGateLearning
import FedGatePolicy
import FedGateTensors
import Foundation
import Logging
import Synchronization

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

    public init(name: String, program: ExecutorProgram) {
        self.name = name
        self.program = program
    }

    public func run(model: [UInt8], task: [String: any Sendable], train: Dataset, dimension: Int, logger: Logger) async throws -> Output {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-executor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: folder) }
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

        let log = folder.appendingPathComponent("program.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil, attributes: [.posixPermissions: 0o600])
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        // The address-space limit is set by the shell that then becomes the program (`exec`); the
        // command's words are passed as arguments, never parsed by the shell.
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "ulimit -v \"$1\" || exit 97; shift; exec \"$@\"", "fedgate-executor", "\(program.memoryLimitMB * 1024)"] + program.command
        process.currentDirectoryURL = folder
        process.environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin", "HOME": folder.path,
                               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "FEDGATE_TASK": folder.appendingPathComponent("task.json").path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let started = ContinuousClock.now
        do { try process.run() } catch {
            throw Failure(description: "executor '\(name)': cannot start \(program.command.joined(separator: " ")): \(error.localizedDescription)")
        }
        // The time limit is kept by a timer on a Dispatch queue, not by this task: a busy
        // cooperative pool must not let a program overrun it.
        let pid = process.processIdentifier
        let overran = Overran()
        let watchdog = DispatchWorkItem { overran.set(); kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + program.timeLimitSeconds, execute: watchdog)
        while process.isRunning {
            if Task.isCancelled { kill(pid, SIGKILL) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        watchdog.cancel()
        if overran.value {
            throw Failure(description: "executor '\(name)' exceeded its time limit of \(program.timeLimitSeconds) s and was killed")
        }
        let tail = String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(1500))
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            let how = process.terminationReason == .exit ? "exited with status \(process.terminationStatus)" : "was killed by signal \(process.terminationStatus)"
            throw Failure(description: "executor '\(name)' \(how) (memory limit \(program.memoryLimitMB) MiB): \(tail)")
        }
        logger.info("executor finished", metadata: ["executor": "\(name)", "seconds": "\((ContinuousClock.now - started).components.seconds)"])

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

/// Set once by the time-limit timer.
private final class Overran: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var value: Bool { flag.withLock { $0 } }
}
