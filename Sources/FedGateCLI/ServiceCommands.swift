import ArgumentParser
import FedGateData
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGateServices
import FedGateSimulation
import FedGateStore
import FedGateTransport
import CFedGateSystem
import Foundation
import Logging
import ServiceLifecycle
import X509

/// The store a config file names, migrated.
func openServiceStore(_ url: String, migrations: URL?) async throws -> any ConsortiumStore {
    do {
        let backend = try openStore(url)
        _ = try await backend.applyMigrations(try Migration.load(from: migrations))
        return backend
    } catch let e as LedgerError { throw ValidationError("store \(url): \(e)") }
}

func loadCredentials(_ tls: TLSPaths, expecting id: String, file: String) throws -> TLSCredentials {
    let credentials: TLSCredentials
    do { credentials = try TLSCredentials(certificate: tls.certificate, key: tls.key, ca: tls.ca) } catch let e as PKIError {
        throw ValidationError("\(file): tls: \(e)")
    }
    guard credentials.identity.id == id else {
        throw ValidationError("\(file): the certificate \(tls.certificate.path) is for '\(credentials.identity.id)', not '\(id)'")
    }
    return credentials
}

/// Runs `body` as a service under SIGTERM/SIGINT handling: the body either watches for the
/// graceful shutdown itself (`cancelOnShutdown` false) or is cancelled when it starts.
struct ClosureService: Service {
    let cancelOnShutdown: Bool
    let body: @Sendable () async throws -> Void
    func run() async throws {
        if cancelOnShutdown { try await cancelWhenGracefulShutdown { try await body() } } else { try await body() }
    }
}

func runUntilSignalled(_ logger: Logger, cancelOnShutdown: Bool = true, _ body: @escaping @Sendable () async throws -> Void) async throws {
    let service = ClosureService(cancelOnShutdown: cancelOnShutdown, body: body)
    let group = ServiceGroup(configuration: .init(services: [.init(service: service)],
                                                  gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// `fedgate broker serve`: the consortium's broker.
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "broker", abstract: "Run the consortium's broker.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Serve gateways and people over mutual TLS until SIGTERM.")
        @Option(help: "The broker's config file (YAML).") var config: String

        func execute() async throws {
            // Measured with `fedgate bench round` (10 silos, 10⁶ parameters): the broker's CPU per
            // round 0.17 → 0.145 s. Not for gateways: theirs rose (they map model-sized arrays each round).
            let tuned = fedgate_tune_allocator() == 1
            let c: BrokerConfig
            c = try loadFile(BrokerConfig.load, config)
            var logger = Logger(label: "fedgate.broker")
            logger.logLevel = .info
            logger.debug("allocator", metadata: ["fixed_mmap_threshold": "\(tuned)"])
            let credentials = try loadCredentials(c.tls, expecting: c.id, file: config)
            guard credentials.identity.role == .broker else { throw ValidationError("\(config): the certificate is a \(credentials.identity.role.rawValue)'s, not a broker's") }
            let store = try await openServiceStore(c.store, migrations: c.migrations)
            var settings = BrokerCoordinator.Settings()
            settings.brokerID = c.id
            settings.heartbeatInterval = .milliseconds(Int(c.heartbeatSeconds * 1000))
            settings.silentAfter = .milliseconds(Int(c.silentAfterSeconds * 1000))
            settings.gatewayPins = VersionPins(versions: c.gatewayVersions, sha256: c.gatewaySHA256)
            settings.attackAlertRounds = c.attackAlertRounds
            settings.maxConcurrentRounds = c.maxConcurrentRounds
            #if DEBUG
            // Tests of crash recovery only, and only in debug builds: where to stop mid-round.
            settings.crashPoints = CrashPoints(parsing: ProcessInfo.processInfo.environment["FEDGATE_TESTING_CRASH_AT"] ?? "")
            #endif
            let limits = Self.limits(c)
            let issuer = try c.issuingCA.map { CertificateIssuer(authority: try loadCA($0.path), days: c.certificateDays) }
            let host = c.host, port = c.port
            // Always under the lease: one broker on a store leads; a second one stands by until it lapses.
            var leaseSettings = BrokerLeaseSettings(holder: c.instance ?? "\(c.id)@\(host):\(port)")
            leaseSettings.duration = .milliseconds(Int(c.leaseSeconds * 1000))
            leaseSettings.onLost = { [logger] lost in
                // Fail-stop: another broker leads now; this one must not serve another call.
                logger.critical("broker lease lost", metadata: ["reason": "\(lost)"])
                FileHandle.standardError.write(Data("Error: \(lost)\n".utf8))
                Foundation.exit(3)
            }
            let lease = leaseSettings
            let metrics = FedGateMetrics()
            let revocations = try await RevocationWatch(store: store)
            defer { revocations.stop() }
            let endpoint = try await serveMetrics(c.metrics, credentials: credentials, metrics: metrics,
                                                  revocation: { revocations.revocation(of: $0) }, logger: logger)
            defer { Task { await endpoint?.close() } }
            let (brokerSettings, brokerLimits, brokerLogger) = (settings, limits, logger)
            // On SIGTERM the body returns: plans stop, gateway streams close, the listener drains.
            try await runUntilSignalled(logger, cancelOnShutdown: false) {
                try await BrokerHost.serve(host: host, port: port, credentials: credentials, store: store, settings: brokerSettings,
                                           limits: brokerLimits, issuer: issuer, enrolmentPort: c.enrolmentPort, lease: lease,
                                           metrics: metrics, logger: brokerLogger) { broker in
                    // Scripts wait for these lines to know the ports (useful with port 0).
                    if let enrolment = broker.enrolmentPort {
                        FileHandle.standardOutput.write(Data("broker \(c.id) enrolling on \(host):\(enrolment)\n".utf8))
                    }
                    FileHandle.standardOutput.write(Data("broker \(c.id) listening on \(host):\(broker.port)\n".utf8))
                    try? await gracefulShutdown()
                }
            }
            logger.info("broker stopped")
        }

        /// The transport's limits from the config's `limits:`.
        static func limits(_ c: BrokerConfig) -> TransportLimits {
            var limits = TransportLimits()
            limits.maximumMessageBytes = c.maximumMessageBytes
            limits.maximumPayloadBytes = c.maximumPayloadBytes
            limits.concurrentUploads = c.concurrentUploads
            limits.handshakesPerSecond = c.handshakesPerSecond
            limits.handshakeBurst = c.handshakeBurst
            limits.chunkBytes = min(limits.chunkBytes, c.maximumMessageBytes / 2)
            return limits
        }
    }
}

/// `fedgate gateway run`: a silo's gateway.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Enrol and run a silo's gateway.",
                                                    subcommands: [Enroll.self, Run.self])

    struct Enroll: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Make a key here and get its certificate from the broker's enrolment port with a one-time token.")
        @Option(help: "The silo id (as invited).") var id: String
        @Option(help: "The silo's region (as invited).") var region: String
        @Option(help: "The one-time token from the consortium operator.") var token: String
        @Option(help: "The broker's enrolment address, host:port.") var broker: String
        @Option(help: "The broker's id, as in its certificate.") var brokerName = "broker"
        @Option(help: "The consortium CA certificate (PEM), obtained out of band.") var ca: String
        @Option(help: "Folder to write key.pem (0600) and cert.pem into.") var out: String

        func execute() async throws {
            let parts = broker.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--broker: '\(broker)' is not host:port") }
            let identity: Identity
            do { identity = try Identity(id: id, role: .silo, region: region) } catch let e as PKIError { throw ValidationError(e.description) }
            let caPEM: String
            do { caPEM = try String(contentsOfFile: ca, encoding: .utf8) } catch { throw ValidationError("--ca: cannot read \(ca)") }
            let credentials = try await Enrolment.enroll(identity: identity, token: token, host: String(parts[0]), port: port,
                                                         brokerName: brokerName, caPEM: caPEM)
            let dir = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try writeSecret(credentials.keyPEM, to: dir.appendingPathComponent("key.pem"))
            try credentials.certificatePEM.write(to: dir.appendingPathComponent("cert.pem"), atomically: true, encoding: .utf8)
            print("\(identity) enrolled: certificate valid until \(credentials.notAfter), written with its key to \(out)")
        }
    }

    struct Run: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Connect out to the broker and take part in rounds until SIGTERM.")
        @Option(help: "The gateway's config file (YAML).") var config: String

        func execute() async throws {
            let c: GatewayConfig
            let policy: SiloPolicy
            do {
                c = try GatewayConfig.load(URL(fileURLWithPath: config))
                policy = try SiloPolicy.load(c.policy)
            } catch let e as PolicyFileError { throw CommandFailure.unusable(e.description) }
            guard policy.silo == c.silo else { throw ValidationError("\(c.policy.path): the policy is silo '\(policy.silo)''s, the gateway is '\(c.silo)'") }
            var logger = Logger(label: "fedgate.gateway")
            logger.logLevel = .info
            let credentials = try loadCredentials(c.tls, expecting: c.silo, file: config)
            let data = try await rows(c)
            let store = try await openServiceStore(c.store, migrations: c.migrations)
            let ledger = PrivacyLedger(backend: store)
            let governor = SiloGovernor(policy: policy, policyText: try String(contentsOf: c.policy, encoding: .utf8), ledger: ledger)
            var settings = Gateway.Settings(credentials: credentials, dataset: c.dataset, data: data)
            settings.brokerPins = VersionPins(versions: policy.brokerVersions, sha256: policy.brokerSHA256)
            (settings.deployments, settings.freshRows, settings.freshLabel) = (c.deployments, c.freshCSV, c.label)
            #if DEBUG
            // Tests only, and only in debug builds: draw the simulator's DP noise ("RUN:SILO") so a run
            // across processes can be compared bit for bit. A release build never reads this.
            if let fixed = ProcessInfo.processInfo.environment["FEDGATE_TESTING_FIXED_NOISE"]?.split(separator: ":"),
               fixed.count == 2, let run = UInt64(fixed[0]), let silo = Int(fixed[1]) {
                settings.fixedNoise = (run, silo)
                logger.warning("TESTING: DP noise drawn from a fixed seed; never use this build for real data", metadata: ["silo": "\(c.silo)"])
            }
            settings.crashPoints = CrashPoints(parsing: ProcessInfo.processInfo.environment["FEDGATE_TESTING_GATEWAY_CRASH_AT"] ?? "")
            #endif
            settings.brokerHost = c.brokerHost
            settings.brokerPort = c.brokerPort
            settings.standbyBrokers = c.standbyBrokers.map { ($0.host, $0.port) }
            settings.welcomeTimeout = .milliseconds(Int64(c.connectTimeoutSeconds * 1000))
            settings.budgetMetrics = c.metrics != nil
            settings.brokerName = c.brokerName
            settings.learningRate = Float(c.learningRate)
            settings.renewBefore = .seconds(Int64(c.renewBeforeDays * 86_400))
            settings.certificateFile = c.tls.certificate
            settings.keyFile = c.tls.key
            // The gateway's readiness line, once per session, on standard output.
            settings.onConnected = { [silo = c.silo] address in
                FileHandle.standardOutput.write(Data("gateway \(silo) connected to broker \(address)\n".utf8))
            }
            let metrics = FedGateMetrics()
            let endpoint = try await serveMetrics(c.metrics, credentials: credentials, metrics: metrics, logger: logger)
            let gateway = Gateway(settings: settings, governor: governor, metrics: metrics, logger: logger)
            // On SIGTERM the gateway's own services stop in order: the link, then the last audit head.
            try await runUntilSignalled(logger, cancelOnShutdown: false) { await gateway.run() }
            await endpoint?.close()
            if let stopped = await gateway.stopped { throw CommandFailure(status: .unavailable, description: "\(stopped)") }
            logger.info("gateway stopped", metadata: ["silo": "\(c.silo)"])
        }

        /// The data set's training and held-out rows, as the config says (`SiloExport`).
        func rows(_ c: GatewayConfig) async throws -> SiloData { try await SiloExport.data(c, config: config) }
    }
}

/// Starts the `/metrics` listener a config asks for; scripts wait for the line it prints.
func serveMetrics(_ listen: MetricsListen?, credentials: TLSCredentials, metrics: FedGateMetrics,
                  revocation: @escaping @Sendable (Certificate) -> String? = { _ in nil }, logger: Logger) async throws -> MetricsEndpoint.Handle? {
    guard let listen else { return nil }
    let handle = try await MetricsEndpoint.serve(host: listen.host, port: listen.port, credentials: credentials, metrics: metrics,
                                                 revocation: revocation, logger: logger)
    FileHandle.standardOutput.write(Data("metrics on https://\(listen.host):\(handle.port)/metrics\n".utf8))
    return handle
}
