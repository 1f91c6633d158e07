import ArgumentParser
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateServices
import FedGateSimulation
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// `fedgate demo`: a whole consortium on this machine, on the embedded store. A CA, a broker and
/// three gateway processes (two hospitals and a clinic, each with its policy from `policies/` and a
/// non-IID shard of the breast-cancer data), a plan one silo refuses, then the example plan run to
/// its end; a summary with accuracy, ε per silo against its cap, bytes, the model and the audit report.
struct DemoCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a whole consortium on this machine: CA, broker, three gateways, a refused plan and the example plan.",
        discussion: "Run from the repository root. Everything goes into --folder (recreated on each run): certificates, SQLite stores, logs, the model and the audit report.")

    @Option(help: "The working folder (recreated: it must be empty or an earlier demo's).") var folder = "fedgate-demo"
    @Option(help: "The plan to run as written.") var plan = "examples/plans/demo.yaml"
    @Option(help: "Seed of the silos' non-IID shards.") var seed: UInt64 = 2
    @Option(help: "Dirichlet concentration of the shards' label mix (smaller: less alike).") var alpha = 2.0
    @Flag(help: "Print the summary as one JSON object on stdout (progress goes to stderr).") var json = false

    static let silos = ["hospital-north", "hospital-south", "clinic-east"]
    static let dataset = "breast-cancer-2024"

    struct SiloSummary: Codable {
        let silo: String
        let accuracy: Double
        let heldOutRows: Int
        let epsilon: Double
        let epsilonCap: Double
        /// ε recomputed here from the silo's own ledger entries for the plan, and the command that does the same.
        let epsilonFromLedger: Double
        let privacyCommand: String
    }

    struct Summary: Codable {
        let plan: String
        let rounds: Int
        let accuracy: Double
        let fairnessDelta: Double
        let gatePassed: Bool
        let modelVersion: Int
        let silos: [SiloSummary]
        let refusal: String
        let bytesToSilos: UInt64
        let bytesFromSilos: UInt64
        let model: String
        let auditReport: String
        let auditChainsIntact: Bool
        let folder: String
    }

    func say(_ line: String) {
        if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
    }

    func execute() async throws {
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let (paths, planText, example) = try inputs(cwd)
        let work = try Self.prepare(URL(fileURLWithPath: folder, relativeTo: cwd).standardizedFileURL)

        say("FedGate demo in \(work.path)")
        // 1. The consortium's PKI: a CA, and a certificate for every party (keys made here stand in for enrolment).
        let ca = try ConsortiumCA.create()
        try ca.certificatePEM.write(to: work.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        _ = try ca.issueLocally("broker", .broker, days: 7, into: work)
        let scientist = try ca.issueLocally("dana", .dataScientist, days: 7, into: work)
        say("  CA and certificates: broker, \(Self.silos.joined(separator: ", ")), dana (data scientist)")

        // 2. The broker.
        let broker = try startBroker(work, paths)
        var gateways: [BenchRoundCommand.Child] = []
        defer {
            gateways.forEach { $0.stop() }
            broker.stop()
        }
        // Interrupted (Ctrl-C, SIGTERM): stop the processes this demo started, then leave.
        let children = ChildGroup(broker)
        let signals = Self.stopOnSignals(children)
        defer { signals.forEach { $0.cancel() } }
        guard let port = try await broker.listeningPort(within: 30) else { throw RemoteFailure("the broker did not start:\n\(broker.output.suffix(2000))") }
        say("  broker listening on 127.0.0.1:\(port) (mutual TLS 1.3)")

        // 3. Three silos: a non-IID shard each, their policy, budget and consent in their own store, a gateway process.
        try await startSilos(ca, port: port, work: work, paths, into: &gateways, children)
        // Each gateway says once per session that it is connected (its readiness line).
        func connected() -> Int { gateways.filter { $0.output.contains(" connected to broker ") }.count }
        for _ in 0..<1500 where connected() < Self.silos.count { try await Task.sleep(for: .milliseconds(20)) }
        guard connected() >= Self.silos.count else {
            throw RemoteFailure("\(connected()) of 3 gateways connected:\n\(gateways.map { $0.output.suffix(1000) }.joined(separator: "\n---\n"))")
        }

        // 4.–6. A plan one silo refuses, then the example plan followed live, and its model pulled.
        let transport = try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: scientist)
        let (status, refusal, versionFile) = try await withGRPCClient(transport: transport) { grpc in
            let client = Fedgate_V1_Broker.Client(wrapping: grpc)
            let refusal = try await showRefusal(client, planText: planText, example: example)
            let status = try await follow(client, planText: planText, example: example)
            return (status, refusal, try await pullModel(client, version: status.modelVersion))
        }

        // 7. The compliance report over the broker's and the silos' trails.
        let (trails, report) = try await complianceReport(work)
        let model = work.appendingPathComponent("model.safetensors")
        if !versionFile.isEmpty { try Data(versionFile).write(to: model, options: .atomic) }

        // 8. ε per silo, as each silo's own ledger has it.
        let silos = try await siloSummaries(status, example: example, work: work)
        let summary = Summary(plan: status.planHash, rounds: status.rounds.count, accuracy: status.accuracy, fairnessDelta: status.fairnessDelta,
                              gatePassed: status.gatePassed, modelVersion: Int(status.modelVersion), silos: silos, refusal: refusal,
                              bytesToSilos: status.bytesOut, bytesFromSilos: status.bytesIn, model: versionFile.isEmpty ? "" : model.path,
                              auditReport: report.path, auditChainsIntact: trails.allSatisfy(\.intact), folder: work.path)
        gateways.forEach { $0.stop() }
        broker.stop()
        try show(summary, gateReasons: status.gateReasons)
    }

    /// The working folder, recreated. An existing folder is removed only if an earlier demo made it.
    static func prepare(_ url: URL) throws -> URL {
        let fm = FileManager.default
        let marker = url.appendingPathComponent(".fedgate-demo")
        if fm.fileExists(atPath: url.path) {
            let contents = (try? fm.contentsOfDirectory(atPath: url.path)) ?? []
            guard contents.isEmpty || fm.fileExists(atPath: marker.path) else {
                throw ValidationError("--folder: \(url.path) exists and was not made by fedgate demo; choose another folder")
            }
            try fm.removeItem(at: url)
        }
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        try "made by fedgate demo; removed and recreated on the next run\n".write(to: marker, atomically: true, encoding: .utf8)
        return url
    }
}

/// The processes a demo started, for stopping them from a signal handler.
final class ChildGroup: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [BenchRoundCommand.Child]

    init(_ first: BenchRoundCommand.Child) { children = [first] }

    func add(_ child: BenchRoundCommand.Child) { lock.withLock { children.append(child) } }

    func stopAll() {
        for child in lock.withLock({ children }) where child.process.isRunning { kill(child.process.processIdentifier, SIGTERM) }
    }
}
