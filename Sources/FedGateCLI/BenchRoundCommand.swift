import ArgumentParser
import FedGateLearning
import FedGatePKI
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import X509
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// `fedgate bench round`: whole rounds over mutual TLS on loopback, with the broker and every
/// gateway a separate `fedgate` process, as deployed. Three shapes: a tiny model (orchestration
/// overhead), Flower's shape (10⁶ parameters), and a ~100 MB model (transfer rate, broker memory).
struct BenchRoundCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "round", abstract: "Time networked rounds with a broker and gateway processes on loopback (release build).")

    @Option(help: "Gateways for the tiny and Flower-shaped runs.") var silos = 10
    @Option(help: "Rounds per run.") var rounds = 10
    @Option(help: "Gateways kept for the large-model run.") var largeSilos = 3
    @Option(help: "The large model (mlp:6144,4096 is 25.4 M parameters, 101.6 MB).") var largeModel = "mlp:6144,4096"
    @Option(help: "Rounds of the large-model run.") var largeRounds = 3
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func validate() throws {
        guard (2...50).contains(silos) else { throw ValidationError("--silos must be 2 to 50") }
        guard (1...silos).contains(largeSilos) else { throw ValidationError("--large-silos must be 1 to --silos") }
        guard rounds >= 1, largeRounds >= 1 else { throw ValidationError("--rounds and --large-rounds must be ≥ 1") }
        _ = try ModelKind(parsing: largeModel)
    }

    final class Child: @unchecked Sendable {
        let process = Process()
        let log: URL
        init(_ arguments: [String], log: URL, cwd: URL) throws {
            self.log = log
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            process.arguments = arguments
            process.currentDirectoryURL = cwd
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }
        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        /// The port a `broker serve` child reports it listens on, once it does (nil after `seconds`).
        func listeningPort(within seconds: Double) async throws -> Int? {
            let until = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < until {
                if let line = output.split(separator: "\n").first(where: { $0.contains("listening on") }), let port = Int(line.split(separator: ":").last ?? "") {
                    return port
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        func stop() { if process.isRunning { kill(process.processIdentifier, SIGTERM); process.waitUntilExit() } }
        /// CPU seconds (user + system) used so far.
        var cpuSeconds: Double {
            guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return 0 }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command name: state is field 3, utime 14 and stime 15 (1-based, whole line).
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        /// Peak resident memory (VmHWM) in MB.
        var peakMB: Double {
            let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
            return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
        }
    }

    struct Run: Codable {
        let shape: String
        let silos: Int
        let model: String
        let parameters: Int
        let rounds: Int
        let secondsPerRound: Double
        let megabytesMoved: Double
        let megabytesPerSecond: Double
        let brokerPeakMB: Double
        /// CPU seconds per round: the broker's, and all gateways' together.
        let brokerCPUPerRound: Double
        let gatewaysCPUPerRound: Double
        let flowerSecondsPerRound: Double?
        /// After the last round: the final model sent to every silo, evaluated, gated and recorded (in the time per round too).
        let finalEvaluationSeconds: Double
    }

    func execute() async throws {
        let consortium = try await BenchConsortium.start(silos: silos)
        defer { consortium.stop() }
        var results: [Run] = []
        let transport = try FedGateTransports.client(host: "127.0.0.1", port: consortium.port, serverName: "broker", credentials: consortium.scientist)
        try await withGRPCClient(transport: transport) { grpc in
            let client = Fedgate_V1_Broker.Client(wrapping: grpc)
            results.append(try await consortium.time("tiny", model: "logistic", silos: silos, rounds: rounds, samplingRate: 0.1, flower: nil,
                                                     client: client))
            results.append(try await consortium.time("flower-shape", model: "mlp:4096,240", silos: silos, rounds: rounds, samplingRate: 0.1,
                                                     flower: silos == 10 ? 18 : (silos == 2 ? 6.5 : nil), client: client))
            for g in consortium.gateways[largeSilos...] { g.stop() }
            try await consortium.waitFor(largeSilos)
            results.append(try await consortium.time("large", model: largeModel, silos: largeSilos, rounds: largeRounds, samplingRate: 0.02,
                                                     flower: nil, client: client))
        }
        try report(results)
    }

    func report(_ results: [Run]) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
            return
        }
        print("networked rounds over mTLS on loopback: broker and gateways as separate processes")
        for r in results {
            var line = r.shape.padding(toLength: 13, withPad: " ", startingAt: 0)
                + String(format: " %2d silos  ", r.silos) + r.model.padding(toLength: 14, withPad: " ", startingAt: 0)
                + String(format: " %10d params  %7.3f s/round  %8.1f MB/s  broker peak %6.0f MB  CPU/round broker %.3f s, gateways %.3f s",
                         r.parameters, r.secondsPerRound, r.megabytesPerSecond, r.brokerPeakMB, r.brokerCPUPerRound, r.gatewaysCPUPerRound)
            line += String(format: "  final evaluation %.3f s", r.finalEvaluationSeconds)
            if let f = r.flowerSecondsPerRound { line += String(format: "  (Flower %.1f s/round: %.0f× faster; target ≥ 50×)", f, f / r.secondsPerRound) }
            print(line)
        }
    }
}

extension ConsortiumCA {
    /// A fresh key and a certificate for a party of a consortium run on this machine (the bench, the
    /// demo), written beside each other in `folder` as ID.pem and ID.key (0600).
    func issueLocally(_ id: String, _ role: Identity.Role, days: Int, into folder: URL) throws -> TLSCredentials {
        let request = try EnrollmentRequest(identity: try Identity(id: id, role: role, region: role.isService ? "eu-west" : nil))
        let pem = try issue(request.csr, days: days).serializeAsPEM()
        try pem.pemString.write(to: folder.appendingPathComponent("\(id).pem"), atomically: true, encoding: .utf8)
        try writeSecret(request.keyPEM, to: folder.appendingPathComponent("\(id).key"))
        return try TLSCredentials(certificatePEM: pem.pemString, keyPEM: request.keyPEM, caPEM: certificatePEM)
    }
}

extension TLSCredentials {
    /// Enrols the silo these credentials are for in a broker's store, as the consortium operator does
    /// with `fedgate silo enrol` (a broker serves only enrolled silos).
    func enrol(in broker: any PartyRegistry, jurisdiction: String = "EU", actor: String) async throws {
        try await broker.enroll(Party(id: identity.id, kind: .silo, region: identity.region ?? "", jurisdiction: jurisdiction,
                                      certificateSHA256: try Certificate.leaf(pemEncoded: certificatePEM).sha256Fingerprint, enrolledAt: Date()), actor: actor)
    }
}
