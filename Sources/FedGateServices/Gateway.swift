import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import ServiceLifecycle

/// A silo's gateway: connects out to the broker (no inbound port), keeps one task stream open with
/// heartbeats, reconnects with backoff and jitter, judges every offer against its own policy and
/// ledger, trains locally with DP-SGD and uploads its update. Its data never leaves it.
public actor Gateway {
    public struct Settings: Sendable {
        public var brokerHost = "127.0.0.1"
        public var brokerPort = 7443
        /// The broker's id, checked against its certificate.
        public var brokerName = "broker"
        /// Standby brokers on the same store (same id): tried in turn after the one above stops answering.
        public var standbyBrokers: [(host: String, port: Int)] = []
        public var credentials: TLSCredentials
        /// The logical data set this gateway serves, and its rows (raw, before standardisation).
        public var dataset: String
        public var data: SiloData
        public var learningRate: Float = 0.1
        public var limits = TransportLimits()
        public var reconnectInitial: Duration = .milliseconds(200)
        public var reconnectMaximum: Duration = .seconds(10)
        /// How long every broker may keep refusing this gateway's certificate at the handshake
        /// (revoked, or a broker that does not know its CA), three times at least, before the
        /// gateway stops trying and says so: long enough to ride out a broker restarted with a
        /// wrong configuration, short enough not to knock for ever.
        public var refusedCertificatePatience: Duration = .seconds(300)
        /// The broker versions (or executable hashes) this silo's policy accepts (`software:`); empty: any.
        public var brokerPins = VersionPins.any
        /// A session gives up on a broker that has not welcomed it within this long (TCP, TLS,
        /// HTTP/2 and the welcome message): a broker that accepts connections and then hangs —
        /// frozen, overloaded, or behind a network that swallows the handshake — must not hold the
        /// gateway, which moves on to the next broker in its list.
        public var welcomeTimeout: Duration = .seconds(15)
        /// How long past a round's deadline (by this gateway's clock) its model download and update
        /// upload may still run: the slack for a broker's clock ahead of this one.
        public var transferGrace: Duration = .seconds(10)
        /// Renew the certificate from the broker when less than this is left of it (nil: never).
        public var renewBefore: Duration?
        /// Where the renewed certificate and key are written (mode 0600 for the key), if anywhere.
        public var certificateFile: URL?
        public var keyFile: URL?
        /// Keep `fedgate_epsilon_spent` and `_remaining` up to date (when `/metrics` is served).
        public var budgetMetrics = false
        /// Called with the broker's address each time a session is welcomed (`gateway run` prints its
        /// one readiness line from it: scripts and tests wait for that, not for log lines).
        public var onConnected: (@Sendable (String) -> Void)?
        /// Where a test stops this process mid-round (none in production).
        public var crashPoints = CrashPoints.none
        /// Where deployed registry versions are kept (`deployments:`); nil: this gateway installs none.
        public var deployments: URL?
        /// The fresh rows a deployed model is monitored on (`dataset.fresh_csv`), and the label column
        /// there for a model without a schema (`dataset.label`).
        public var freshRows: URL?
        public var freshLabel: String?
        /// Tests only: repeatable DP noise for this silo (run seed, silo index), to compare with the simulator.
        public var fixedNoise: (run: UInt64, silo: Int)?
        /// Tests only: drop out of a secure-aggregation round right after sharing keys (the stream
        /// is closed when the broker relays the shares), as a silo that dies mid-round would.
        @_spi(Testing) public var dropOutBeforeMasking = false
        /// Tests only: told every message this gateway writes to the broker, on every call, as it
        /// is written (a test inspects what leaves the silo).
        @_spi(Testing) public var outgoing: (@Sendable (any Sendable) -> Void)?

        public init(credentials: TLSCredentials, dataset: String, data: SiloData) {
            self.credentials = credentials
            self.dataset = dataset
            self.data = data
        }

        /// Numeric rows only (plans without a schema).
        public init(credentials: TLSCredentials, dataset: String, train: Dataset, test: Dataset) {
            self.init(credentials: credentials, dataset: dataset, data: SiloData(train: train, test: test))
        }
    }

    /// What the gateway did, for tests and the operator.
    public struct Activity: Sendable {
        public var sessions = 0
        public var offersAccepted = 0
        public var offersRefused: [String] = []
        public var updatesSent = 0
        /// The last update this silo computed, before any clipping or masking (tests compare it
        /// with what the broker saw).
        @_spi(Testing) public var lastDelta: [Float] = []
        public var bytesSent = 0
        public var bytesReceived = 0
    }

    public let settings: Settings
    let governor: SiloGovernor
    let logger: Logger
    /// Each offered plan's verdict at this silo, kept by plan hash.
    let judge: OfferJudge
    /// The silo's budget reserved for each round in flight.
    let reservations: BudgetReservations
    var training: [RoundKey: Task<Void, Never>] = [:]
    /// Each round's deadline as its task states it (ms since 1970, the broker's clock), until the
    /// round is settled: the round's transfers end by it.
    var deadlines: [RoundKey: Int64] = [:]
    /// FedPer: each plan's model as this silo last trained it (its local layers are used), by plan hash.
    var personal: [String: [Float]] = [:]
    /// Each plan's update codec (`compression:`), kept across rounds: top-k's error feedback is this silo's own.
    var codecs: [String: any UpdateCodec] = [:]
    /// SCAFFOLD: this silo's control variate per plan, kept across rounds (a restart starts it at zero).
    var scaffoldClients: [String: [Float]] = [:]
    /// The plans this silo is in (accepted, not yet announced ended), with when the broker last asked
    /// about each: the policy's `max_concurrent_plans` counts them. A plan the broker has not asked
    /// about for a day (it stopped without saying) no longer counts.
    var activePlans: [String: Date] = [:]
    /// Secure-aggregation rounds in flight.
    var secure: [RoundKey: SecureSession] = [:]
    /// Each plan's statistics release as sent (`statisticsRelease`), by plan hash.
    var releasedStatistics: [String: Fedgate_V1_FeatureMoments] = [:]
    /// The registry version this silo runs, its monitoring loop, whether a check is under way, and
    /// the current session's stream to the broker (nil between sessions: nothing is released then).
    var deployed: Deployed?
    /// Each deployment's answer as sent, by deployment: a task sent again gets it again.
    var answeredDeployments: [UInt32: Fedgate_V1_DeploymentAnswer] = [:]
    var monitoringTask: Task<Void, Never>?
    var checking = false
    var brokerOutbox: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation?

    /// This silo's side of one secure-aggregation round: the protocol's client, and the update and
    /// the broker's relay, whichever comes first waiting for the other before masking.
    public internal(set) var activity = Activity()
    /// The certificate and key in use: the configured ones, then each renewal's.
    public internal(set) var credentials: TLSCredentials
    var jitter = SystemRandomNumberGenerator()

    public let metrics: FedGateMetrics
    /// Why the gateway stopped trying to reach the broker, when it gave up (nil while it tries).
    public private(set) var stopped: GatewayError?

    public init(settings: Settings, governor: SiloGovernor, metrics: FedGateMetrics = FedGateMetrics(), logger: Logger) {
        self.settings = settings
        self.governor = governor
        self.metrics = metrics
        self.logger = logger
        credentials = settings.credentials
        let silo = settings.credentials.identity.id
        judge = OfferJudge(governor: governor, dataset: settings.dataset, data: settings.data, silo: silo)
        reservations = BudgetReservations(ledger: governor.ledger, silo: silo, logger: logger)
        metrics.announce(.gateway, certificateNotAfter: settings.credentials.notAfter)
    }

    var budgetRefresh: Task<Void, Never>?
    var budgetDirty = false

    public var siloID: String { settings.credentials.identity.id }

    /// Runs until cancelled: one session after another, with backoff between failures.
    public func run() async {
        await releaseUnsentReservations()
        await refreshBudgetMetrics()
        loadDeployed()
        defer { monitoringTask?.cancel() }
        // The silo's own audit chain, its head signed with the silo's key while it grows; and the
        // link to the broker. Stopped (SIGTERM, or the caller cancelled) the link goes first, then
        // the head is signed once more.
        let heads = AuditHeadKeeper(store: governor.ledger.backend, credentials: settings.credentials, logger: logger)
        auditHeads = heads
        let services: [any Service] = [AuditHeadSigning(keeper: heads, every: .seconds(5)), BrokerLink(gateway: self)]
        try? await ServiceGroup(running: services, logger: logger).run()
    }

    /// Connects to the broker (then to the standbys in turn), and again whenever the task stream
    /// ends, with backoff, until cancelled; then stops training still running.
    func keepLinked() async {
        var delay = settings.reconnectInitial
        let endpoints = [(settings.brokerHost, settings.brokerPort)] + settings.standbyBrokers
        var next = 0
        var refused = 0
        var firstRefused = ContinuousClock.now
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let (host, port) = endpoints[next]
            do {
                try await session(host: host, port: port)
                refused = 0
                logger.notice("broker closed the task stream; reconnecting", metadata: ["silo": "\(siloID)"])
            } catch {
                if Task.isCancelled { break }
                if let mismatch = Self.versionRefused(error) {
                    // Retrying cannot help until one side's software or pins change.
                    logger.critical("stopping: \(mismatch)", metadata: ["silo": "\(siloID)", "broker": "\(host):\(port)"])
                    stopped = mismatch
                    break
                }
                refused = Self.certificateRefused(error) ? refused + 1 : 0
                if refused == 1 { firstRefused = .now }
                if refused > 0 {
                    let refusal = GatewayError.certificateRefused(silo: siloID, notAfter: credentials.notAfter, attempts: refused)
                    if refused >= 3, ContinuousClock.now - firstRefused >= settings.refusedCertificatePatience {
                        logger.critical("stopping: \(refusal)", metadata: ["silo": "\(siloID)"])
                        stopped = refusal
                        break
                    }
                    if refused == 1 { logger.error("\(refusal); retrying", metadata: ["silo": "\(siloID)", "broker": "\(host):\(port)"]) }
                } else {
                    logger.warning("session with the broker failed", metadata: ["silo": "\(siloID)", "error": "\(error)"])
                }
            }
            await abandonRoundsInFlight()
            if ContinuousClock.now - started > .seconds(30) || renewedJustNow { delay = settings.reconnectInitial }
            if renewedJustNow { renewedJustNow = false; continue }
            // The next broker in the list; the backoff applies once the whole list was tried.
            next = (next + 1) % endpoints.count
            if next != 0 { continue }
            let spread = Double.random(in: 0.8...1.2, using: &jitter)
            try? await Task.sleep(for: delay * spread)
            delay = min(delay * 2, settings.reconnectMaximum)
        }
        for task in training.values { task.cancel() }
    }

    /// The software mismatch a session failed on, either side's, or nil.
    static func versionRefused(_ error: any Error) -> GatewayError? {
        if let e = error as? GatewayError, case .versionRefused = e { return e }
        if let e = error as? RPCError, e.message.hasPrefix(BrokerService.versionRefusal) {
            return .versionRefused(reason: "the broker says: " + e.message.dropFirst(BrokerService.versionRefusal.count))
        }
        return nil
    }

    /// Whether a session failed because the broker refused this gateway's certificate at the
    /// handshake (its TLS alert: certificate unknown, revoked or bad), not for the network's sake.
    static func certificateRefused(_ error: any Error) -> Bool {
        let text = String(reflecting: error)
        return ["ALERT_CERTIFICATE_UNKNOWN", "ALERT_CERTIFICATE_REVOKED", "ALERT_BAD_CERTIFICATE"].contains { text.contains($0) }
    }

    /// The task stream ended: the broker has dropped this silo from any round in flight, and the
    /// connection its uploads would use is gone. Training still running is stopped, and every
    /// reservation whose update never left is released (updates are committed before they leave).
    func abandonRoundsInFlight() async {
        brokerOutbox = nil
        let running = Array(training.values)
        for task in running { task.cancel() }
        for task in running { await task.value }
        secure.removeAll()
        deadlines.removeAll()
        await reservations.releaseAll()
    }

    /// A reservation still open when the gateway (re)starts belongs to a round whose update never
    /// left (updates are committed before they are sent): nothing was spent, so it is released.
    func releaseUnsentReservations() async {
        await reservations.releaseLeftovers(dataset: settings.dataset)
    }

    var renewedJustNow = false
    /// Signs this silo's audit head (set when `run` starts).
    var auditHeads: AuditHeadKeeper?

    /// A test's crash point (`Settings.crashPoints`): this process stops the first time it reaches
    /// `phase` (after `after`, so what it just sent leaves first), as a power cut would.
    func crashPoint(_ phase: String, after delay: Duration = .zero) async {
        guard settings.crashPoints.effect(at: phase) != nil else { return }
        if delay > .zero { try? await Task.sleep(for: delay) }
        settings.crashPoints.reach(phase, logger: logger)
    }

    func maskingFailed(_ key: RoundKey, _ error: any Error) {
        logger.error("masked update not sent", metadata: ["silo": "\(siloID)", "task": "\(key)", "error": "\(error)"])
    }

    /// Commits the round's reservations: its update is about to leave (`BudgetReservations.commit`).
    func commit(_ key: RoundKey) async throws {
        do { try await reservations.commit(key) } catch {
            await refreshBudgetMetrics()
            throw error
        }
        await refreshBudgetMetrics()
    }

    /// The round is over: a reservation still open was never spent (no update left), so it is released.
    /// A plan ended at the broker: it no longer counts against the policy's concurrent plans, and its
    /// codec (top-k's residual) is let go. Its statistics release stays: the same plan submitted
    /// again gets the same values, spending nothing more.
    func planEnded(_ ended: Fedgate_V1_PlanEnded) {
        guard activePlans.removeValue(forKey: ended.planHash) != nil else { return }
        codecs.removeValue(forKey: ended.planHash)
        scaffoldClients.removeValue(forKey: ended.planHash)
        logger.info("plan ended", metadata: ["silo": "\(siloID)", "plan": "\(ended.planHash.prefix(12))", "state": "\(PeerText.bounded(ended.state, limit: 16))"])
    }

    /// Why this silo takes no further plan now (nil: it may): the policy's `max_concurrent_plans`
    /// against the other plans it is in.
    func concurrencyRefusal(_ plan: String, now: Date) -> String? {
        guard let limit = governor.policy.maxConcurrentPlans else { return nil }
        activePlans = activePlans.filter { $0.value > now.addingTimeInterval(-86_400) }
        let others = activePlans.keys.filter { $0 != plan }
        guard others.count >= limit else { return nil }
        return "this silo is in \(others.count) other plan\(others.count == 1 ? "" : "s") already; its policy allows \(limit) at once (max_concurrent_plans)"
    }

    func settle(_ outcome: Fedgate_V1_RoundOutcome) async {
        let key = RoundKey(outcome.planHash, outcome.round)
        if let task = training[key] { await task.value }
        secure.removeValue(forKey: key)
        deadlines.removeValue(forKey: key)
        await reservations.release(key)
        metrics.count("fedgate_rounds_total", [("outcome", ["committed", "aborted"].contains(outcome.state) ? outcome.state : "other")])
        await refreshBudgetMetrics()
        logger.info("round over", metadata: ["silo": "\(siloID)", "round": "\(outcome.round)", "state": "\(outcome.state)"])
    }
}
