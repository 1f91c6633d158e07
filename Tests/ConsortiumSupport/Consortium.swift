import FedGatePKI
@_spi(Testing) import FedGateStore
import FedGateTransport
import Foundation
import Logging
import Synchronization
import Testing
import X509

/// A consortium made for one test: a CA, certificates for a broker, silos and people (each with
/// its key kept beside it), a store for each party, and files for tools such as `openssl`.
struct Consortium {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let migrations = root.appendingPathComponent("migrations")

    let ca: ConsortiumCA
    let folder: URL
    let logger: Logger

    init() throws {
        ca = try ConsortiumCA.create()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-net-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try ca.certificatePEM.write(to: folder.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        var logger = Logger(label: "fedgate.test")
        logger.logLevel = ProcessInfo.processInfo.environment["FEDGATE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        self.logger = logger
    }

    /// Credentials for `id` in `role`, issued by `issuer` (default: this consortium's CA) at `now`;
    /// an intermediate issuer's certificate follows the party's in its file.
    func credentials(_ id: String, _ role: Identity.Role, region: String? = "eu-west", issuer: ConsortiumCA? = nil,
                     days: Int = 7, now: Date = Date()) throws -> TLSCredentials {
        let identity = try Identity(id: id, role: role, region: role.isService ? region : nil)
        let request = try EnrollmentRequest(identity: identity)
        let authority = issuer ?? ca
        let certificate = try authority.issue(request.csr, days: days, now: now)
        let credentials = try TLSCredentials(certificatePEM: try authority.chainPEM(certificate), keyPEM: request.keyPEM,
                                             caPEM: try ca.certificatePEM)
        try credentials.certificatePEM.write(to: file("\(id).pem"), atomically: true, encoding: .utf8)
        try credentials.keyPEM.write(to: file("\(id).key"), atomically: true, encoding: .utf8)
        return credentials
    }

    func file(_ name: String) -> URL { folder.appendingPathComponent(name) }

    /// Enrols the silo these credentials are for in a broker's registry, as the consortium operator
    /// does (`fedgate silo approve` or `fedgate silo enrol`): a broker serves only enrolled silos.
    func enrol(_ silo: TLSCredentials, in broker: any RegistryBackend, jurisdiction: String = "EU") async throws {
        try await broker.enroll(Party(id: silo.identity.id, kind: .silo, region: silo.identity.region ?? "", jurisdiction: jurisdiction,
                                      certificateSHA256: try Certificate.leaf(pemEncoded: silo.certificatePEM).sha256Fingerprint, enrolledAt: Date()),
                                actor: "operator")
    }

    /// Credentials for silo `id`, enrolled in `broker`'s registry.
    func enrolledSilo(_ id: String, in broker: any RegistryBackend, region: String = "eu-west") async throws -> TLSCredentials {
        let credentials = try credentials(id, .silo, region: region)
        try await enrol(credentials, in: broker)
        return credentials
    }

    /// The broker store a process config names (`sqlite:NAME` in this folder, or a PostgreSQL URL),
    /// migrated, for enrolling silos before the broker process serves them.
    func registry(_ store: String) async throws -> any RegistryBackend {
        if store.hasPrefix("sqlite:") {
            let path = String(store.dropFirst("sqlite:".count))
            let ledger = try SQLiteLedger(path: path.hasPrefix("/") ? path : file(path).path)
            _ = try await ledger.applyMigrations(try Migration.load(from: Self.migrations))
            return ledger
        }
        let ledger = try PostgresLedger(url: store)
        _ = try await ledger.applyMigrations(try Migration.load(from: Self.migrations))
        return ledger
    }

    /// A migrated store in a fresh PostgreSQL database, or nil when no server is configured outside
    /// CI (under CI a missing server is a failure, never a silent skip).
    func postgresStore() async throws -> PostgresLedger? {
        guard let url = try await postgresURL() else { return nil }
        let store = try PostgresLedger(url: url)
        _ = try await store.applyMigrations(try Migration.load(from: Self.migrations))
        return store
    }

    /// The URL of a fresh, empty PostgreSQL database for a process to open, or nil as `postgresStore`.
    func postgresURL() async throws -> String? {
        guard let url = ProcessInfo.processInfo.environment["FEDGATE_TEST_POSTGRES_URL"] else {
            if ProcessInfo.processInfo.environment["CI"] != nil {
                Issue.record("CI must run the PostgreSQL service tests: FEDGATE_TEST_POSTGRES_URL is not set (see scripts/pg-test-cluster.sh)")
            }
            return nil
        }
        return try await PostgresLedger.scratchURL(on: url, prefix: "fedgate_p_")
    }

    /// A migrated SQLite store in the test folder.
    func store(_ name: String) async throws -> SQLiteLedger {
        let store = try SQLiteLedger(path: file("\(name).sqlite").path)
        _ = try await store.applyMigrations(try Migration.load(from: Self.migrations))
        return store
    }
}

/// Collects values from callbacks (refusals, log lines) for assertions.
final class Recorder<T: Sendable>: Sendable {
    private let values = Mutex<[T]>([])
    func add(_ value: T) { values.withLock { $0.append(value) } }
    var all: [T] { values.withLock { $0 } }

    /// Waits up to `seconds` for a value satisfying `match`.
    func wait(seconds: Double = 5, for match: (T) -> Bool) async -> T? {
        let until = Date().addingTimeInterval(seconds)
        while Date() < until {
            if let v = all.first(where: match) { return v }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return all.first(where: match)
    }
}

/// Runs `openssl s_client` against the broker as a real, independent TLS peer; it says nothing and
/// hangs up once `done` holds (or after 10 s); returns its output.
func opensslClient(port: Int, arguments: [String], until done: @escaping @Sendable () -> Bool = { false }) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "broker", "-brief"] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let input = Pipe()
    process.standardInput = input
    try process.run()
    let until = Date().addingTimeInterval(10)
    Thread.sleep(forTimeInterval: 0.2)
    while !done(), process.isRunning, Date() < until { Thread.sleep(forTimeInterval: 0.05) }
    try input.fileHandleForWriting.close()
    process.waitUntilExit()
    return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
}

/// Polls `condition` until it holds or `seconds` pass (generous: the whole suite shares two cores,
/// and CPU-bound tests can hold the cooperative threads for a while); whether it held.
@discardableResult
func eventually(seconds: Double = 60, every interval: Duration = .milliseconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let until = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < until {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
