import Crypto
import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging
import FedGateRounds

/// The broker's state: connected gateways, the plans it runs and the round each is in. Handlers
/// feed it what arrives; each plan's rounds run as one task that writes every round transition
/// to the store before acting on it.
public actor BrokerCoordinator {
    public struct Settings: Sendable {
        public var brokerID = "broker"
        public var heartbeatInterval: Duration = .seconds(2)
        /// A gateway silent this long is disconnected (and dropped from the round it is in).
        public var silentAfter: Duration = .seconds(10)
        /// How long silos have to answer an offer, at most (and at most a third of the round deadline).
        public var offerWindow: Duration = .seconds(30)
        /// How long a plan waits for enough silos to connect before a round is attempted anyway.
        public var connectWait: Duration = .seconds(30)
        /// Seed of the initial model.
        public var modelSeed: UInt64 = 0
        /// Updates with a larger L2 norm are refused (and audited): no honest DP-SGD update comes near it.
        public var maximumUpdateNorm = 1e4
        /// How long a plan's run waits for an unreachable store before its plan fails.
        public var storePatience: Duration = .seconds(120)
        /// How often a plan waiting for silos' approvals asks them again.
        public var approvalPoll: Duration = .seconds(10)
        /// Where a test stops this process in the middle of a round (none in production).
        public var crashPoints = CrashPoints.none
        /// The time of day the broker records (in rounds, audit records, versions) and sends (deadlines).
        public var wallClock = WallClock.system
        /// The gateway versions (or executable hashes) this broker serves; empty: any.
        public var gatewayPins = VersionPins.any
        /// A silo flagged as a likely attacker (excluded by a robust aggregator, or its update refused
        /// by validation) in this many rounds of a plan raises an alert.
        public var attackAlertRounds = 3
        /// The most rounds in flight across plans (nil: no limit); plans wanting more take turns.
        public var maxConcurrentRounds: Int?
        /// Tests only: the survivor list the broker tells each silo in a secure round's consistency
        /// check (silo, true list → list told), to show the silos catch a broker that lies.
        @_spi(Testing) public var tellSurvivors: (@Sendable (String, [String]) -> [String])?
        public init() {}
    }

    /// A plan's final evaluation: who was asked and what they answered, and the model they score.
    struct Evaluating {
        var state: FinalEvaluation<Fedgate_V1_EvaluationReport>
        let model: ModelFile
    }

    struct ActiveRound {
        let number: Int
        /// The round's state machine: who answered and uploaded, the secure exchange, what comes next.
        var machine: RoundMachine<SecAggBinding>
        /// What feature moments from this plan's silos may look like (from its columns and model).
        let momentsShape: (features: ClosedRange<Int>, classes: ClosedRange<Int>)
        /// The round's model file, cut into chunks as each download reads it (it shares the
        /// global model's storage; let go before the model is updated in place).
        var model: ModelFile?
        var dimension = 0
        /// FedAvg folds each valid update in as it arrives: one accumulator, whatever the number of
        /// silos. Other strategies (robust ones need every update) keep the updates in the machine.
        var folded: WeightedAverage?
        /// A secure-aggregation round's setup, as sent to the silos (the protocol's state is the machine's).
        var secureSetup: Fedgate_V1_SecAggSetup?
        /// The survivors' mean, once their masked sum was unmasked and decoded.
        var secureMean: [Float]?
        /// The round's poisoning flags so far (refusals as updates arrive, exclusions at aggregation).
        var flags: [AttackFlag] = []
        /// The plan's update codec (`compression:`), nil for float32 safetensors.
        var codec: String?
        /// Update bytes taken this round, and what they would have been as float32.
        var bytesIn = 0
        var rawBytes = 0
        /// SCAFFOLD: Σ Δyᵢ/(Kᵢ·ηᵢ) over the updates taken, and how many.
        var scaffoldSum: [Float]?
        var scaffoldCount = 0
    }

    struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, Never>
        let timer: Task<Void, Never>
    }
    var nextWaiter: UInt64 = 0

    public let settings: Settings
    let chunkBytes: Int
    /// The store, for requests from people: an unreachable database fails them at once.
    let store: any BrokerStore
    /// The store, for plans' runs: an unreachable database delays them, for up to `storePatience`.
    let runStore: RetryingStore
    let logger: Logger
    /// The open task streams, and when each gateway was last heard from in the broker's awake time.
    var gateways: GatewaySessions
    var active: [String: ActiveRound] = [:]
    var evaluations: [String: Evaluating] = [:]
    /// Plans asking their silos whether they may begin (the admission offer), or waiting for approvals.
    var admissions: [String: Admitting] = [:]
    /// Per plan, for the ε mirror: the plan with its noise multiplier pinned (a target ε is
    /// calibrated once here, not again after every round); absent when its events cannot be made.
    var mirrorPlans: [String: TrainingPlan] = [:]
    /// Per running plan, the rounds each silo was flagged in, for the alert.
    var attackWatches: [String: AttackWatch] = [:]
    /// Deployments of registry versions to silos, and the files they send (SHA-256, size) by version.
    var rollout = Rollout()
    /// The fair scheduler's slots (with `maxConcurrentRounds`) and the plans suspended waiting for one.
    var slots: RoundSlots?
    var slotWaiters: [String: CheckedContinuation<Void, Never>] = [:]
    var deploymentFiles: [Int: (sha256: String, bytes: Int)] = [:]

    static func mirrorPlan(_ plan: TrainingPlan) -> TrainingPlan? {
        var pinned = plan
        guard let z = try? plan.noiseMultiplier() else { return nil }
        pinned.dp.noiseMultiplier = z
        return (try? pinned.roundEvent()) == nil ? nil : pinned
    }
    var waiters: [String: Waiter] = [:]
    var plans: [String: PlanStatus] = [:]
    var runs: [String: Task<Void, Never>] = [:]
    var monitor: Task<Void, Never>?
    /// Set by `shutdown`: plans stopped then stay running in the store, for the next broker.
    var stopping = false
    /// The leader lease this broker holds, checked by every round commit (nil: no lease).
    var fence: LeaseFence?

    /// Signs the broker's audit head for the silos, and the CA their heads are checked against
    /// (`exchangeAuditHeads`); when each silo's head last arrived.
    var auditHeads: (keeper: AuditHeadKeeper, caPEM: String)?
    var lastWitnessed: [String: ContinuousClock.Instant] = [:]

    public nonisolated let metrics: FedGateMetrics
    /// When each plan's round in flight was opened (for the round-duration metric).
    var roundStarted: [String: ContinuousClock.Instant] = [:]

    public init(settings: Settings = .init(), store: any BrokerStore, chunkBytes: Int = TransportLimits().chunkBytes,
                metrics: FedGateMetrics = FedGateMetrics(), logger: Logger) {
        self.settings = settings
        gateways = GatewaySessions(heartbeatInterval: settings.heartbeatInterval, silentAfter: settings.silentAfter, at: .now)
        self.metrics = metrics
        self.chunkBytes = chunkBytes
        self.store = store
        runStore = RetryingStore(base: store, patience: settings.storePatience, logger: logger, metrics: metrics)
        self.logger = logger
    }

    /// The time of day, from the settings' wall clock.
    func now() -> Date { settings.wallClock.now() }

    // MARK: Gateways

    /// A gateway opened its task stream. A second stream from the same silo replaces the first.
    public func open(silo: String, datasets: [String], certificateNotAfter: Date? = nil,
                     outbox: AsyncStream<Fedgate_V1_BrokerMessage>.Continuation) -> UInt64 {
        startMonitorIfNeeded()
        let (token, replaced) = gateways.open(silo, datasets: datasets, certificateNotAfter: certificateNotAfter, outbox: outbox, at: .now)
        if replaced != nil {
            // The earlier stream is gone, and with it what the gateway was doing for a round in
            // flight (it abandons those when a stream ends): the silo is dropped from them now, as
            // a close would. The earlier stream's own close comes later with its old token and is
            // ignored, so without this a round waited for the silo until its deadline.
            logger.notice("gateway reconnected; earlier stream closed", metadata: ["silo": "\(silo)"])
            dropFromRoundsInFlight(silo)
        }
        metrics.set("fedgate_connected_gateways", Double(gateways.count))
        var welcome = Fedgate_V1_Welcome()
        welcome.brokerID = settings.brokerID
        welcome.heartbeatIntervalMs = UInt32(settings.heartbeatInterval.milliseconds)
        welcome.softwareVersion = SoftwareIdentity.running.version
        welcome.binarySha256 = SoftwareIdentity.running.sha256
        var message = Fedgate_V1_BrokerMessage()
        message.welcome = welcome
        outbox.yield(message)
        logger.info("gateway connected", metadata: ["silo": "\(silo)", "datasets": "\(datasets.sorted())"])
        sendAuditHead(to: [silo])
        resendOwedDeployment(to: silo)
        return token
    }

    /// A gateway's stream ended (or was closed): it no longer counts on any round it is in.
    public func close(silo: String, token: UInt64) {
        guard gateways.close(silo, token: token) else { return }
        metrics.set("fedgate_connected_gateways", Double(gateways.count))
        logger.notice("gateway disconnected", metadata: ["silo": "\(silo)"])
        dropFromRoundsInFlight(silo)
    }

    /// A silo's stream ended: it no longer counts on any round in flight.
    func dropFromRoundsInFlight(_ silo: String) {
        for plan in active.keys {
            active[plan]!.machine.drop(silo)
            wakeIfDone(plan)
        }
        for plan in admissions.keys where admissions[plan]!.asked.remove(silo) != nil { wakeIfDone(plan) }
    }

    func isSession(_ silo: String, _ token: UInt64) -> Bool { gateways.isCurrent(silo, token: token) }

    /// Something arrived on a silo's task stream: it is alive.
    public func heartbeat(silo: String, token: UInt64) {
        gateways.heard(from: silo, token: token, at: .now)
    }

    /// A transfer of a silo's (a model range read, an update received) shows it alive too, however
    /// late its task stream's heartbeats are.
    func heardFrom(_ silo: String) {
        gateways.heard(from: silo, at: .now)
    }

    public var connectedSilos: [String] { gateways.connected }

    /// The expiry of the certificate a connected silo's stream was opened with.
    public func certificateNotAfter(of silo: String) -> Date? { gateways.certificateNotAfter(of: silo) }

    func startMonitorIfNeeded() {
        guard monitor == nil else { return }
        monitor = Task { [weak self, interval = settings.heartbeatInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await self?.closeSilentGateways()
            }
        }
    }

    /// Closes the streams of gateways silent for `silentAfter` of the broker's own awake time
    /// (`Liveness`): a broker starved of CPU does not blame the gateways for its stall.
    func closeSilentGateways() {
        for (silo, token) in gateways.silent(at: .now) {
            logger.warning("gateway silent; closing its stream", metadata: ["silo": "\(silo)"])
            close(silo: silo, token: token)
        }
    }
}
