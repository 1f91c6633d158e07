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
        public var train: Dataset
        public var test: Dataset
        public var learningRate: Float = 0.1
        public var limits = TransportLimits()
        public var reconnectInitial: Duration = .milliseconds(200)
        public var reconnectMaximum: Duration = .seconds(10)
        /// A session gives up on a broker that has not welcomed it within this long (TCP, TLS,
        /// HTTP/2 and the welcome message): a broker that accepts connections and then hangs —
        /// frozen, overloaded, or behind a network that swallows the handshake — must not hold the
        /// gateway, which moves on to the next broker in its list.
        public var welcomeTimeout: Duration = .seconds(15)
        /// Renew the certificate from the broker when less than this is left of it (nil: never).
        public var renewBefore: Duration?
        /// Where the renewed certificate and key are written (mode 0600 for the key), if anywhere.
        public var certificateFile: URL?
        public var keyFile: URL?
        /// Keep `fedgate_epsilon_spent` and `_remaining` up to date (when `/metrics` is served).
        public var budgetMetrics = false
        /// Where a test stops this process mid-round (none in production).
        public var crashPoints = CrashPoints.none
        /// Tests only: repeatable DP noise for this silo (run seed, silo index), to compare with the simulator.
        public var fixedNoise: (run: UInt64, silo: Int)?
        /// Tests only: drop out of a secure-aggregation round right after sharing keys (the stream
        /// is closed when the broker relays the shares), as a silo that dies mid-round would.
        @_spi(Testing) public var dropOutBeforeMasking = false

        public init(credentials: TLSCredentials, dataset: String, train: Dataset, test: Dataset) {
            self.credentials = credentials
            self.dataset = dataset
            self.train = train
            self.test = test
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
    private let governor: SiloGovernor
    private let logger: Logger
    /// A plan this silo accepted, with its rows restricted to the plan's columns (the label is read
    /// separately: training never sees a column the plan did not name) and their moments, both
    /// computed once per plan.
    private struct AcceptedPlan {
        let plan: TrainingPlan
        let train: Dataset
        let test: Dataset
        let moments: Standardisation.Moments
    }

    private enum Verdict {
        case accepted(AcceptedPlan)
        case refused([String])
    }

    /// Each offered plan's verdict at this silo, by plan hash.
    private var decisions: [String: Verdict] = [:]
    /// Ledger reservation per "plan/round" not yet settled.
    private var reservations: [String: [String]] = [:]
    private var training: [String: Task<Void, Never>] = [:]
    /// FedPer: each plan's model as this silo last trained it (its local layers are used), by plan hash.
    private var personal: [String: [Float]] = [:]
    /// Secure-aggregation rounds in flight, by "plan/round".
    private var secure: [String: SecureSession] = [:]

    /// This silo's side of one secure-aggregation round: the protocol's client, and the update and
    /// the broker's relay, whichever comes first waiting for the other before masking.
    private struct SecureSession {
        var client: SecureAggregationClient
        let setup: Fedgate_V1_SecAggSetup
        var update: (delta: [Float], header: TransferHeader)?
        var relay: SecAggRelay?
        var masked = false
    }
    public private(set) var activity = Activity()
    /// The certificate and key in use: the configured ones, then each renewal's.
    public private(set) var credentials: TLSCredentials
    private var jitter = SystemRandomNumberGenerator()

    public let metrics: FedGateMetrics

    public init(settings: Settings, governor: SiloGovernor, metrics: FedGateMetrics = FedGateMetrics(), logger: Logger) {
        self.settings = settings
        self.governor = governor
        self.metrics = metrics
        self.logger = logger
        credentials = settings.credentials
    }

    private var budgetRefresh: Task<Void, Never>?
    private var budgetDirty = false

    /// ε committed on this silo's data set, and what is left of its tightest lifetime or window cap:
    /// only when `/metrics` is served, and off the round's path (composing a long ledger is not free;
    /// the bench saw a tiny round's gateway CPU double when this ran inline).
    private func refreshBudgetMetrics() async {
        guard settings.budgetMetrics else { return }
        guard budgetRefresh == nil else { budgetDirty = true; return }
        budgetRefresh = Task { [weak self] in
            await self?.computeBudgetMetrics()
            await self?.budgetRefreshed()
        }
    }

    private func budgetRefreshed() async {
        budgetRefresh = nil
        if budgetDirty {
            budgetDirty = false
            await refreshBudgetMetrics()
        }
    }

    private func computeBudgetMetrics() async {
        let dataset = settings.dataset
        guard let budget = try? await governor.ledger.backend.budget(dataset),
              let spent = try? await governor.ledger.spent(dataset: dataset, delta: budget.delta) else { return }
        metrics.set("fedgate_epsilon_spent", [("dataset", dataset)], spent.committed)
        if let cap = [budget.lifetimeCap, budget.windowCap].compactMap({ $0 }).min() {
            metrics.set("fedgate_epsilon_remaining", [("dataset", dataset)], max(0, cap - spent.withReserved))
        }
    }

    public var siloID: String { settings.credentials.identity.id }

    /// Runs until cancelled: one session after another, with backoff between failures.
    public func run() async {
        await releaseUnsentReservations()
        await refreshBudgetMetrics()
        // The silo's own audit chain, its head signed with the silo's key while it grows.
        let heads = AuditHeadKeeper(store: governor.ledger.backend, credentials: settings.credentials, logger: logger)
        auditHeads = heads
        let keeper = Task { await heads.run() }

        var delay = settings.reconnectInitial
        let endpoints = [(settings.brokerHost, settings.brokerPort)] + settings.standbyBrokers
        var next = 0
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let (host, port) = endpoints[next]
            do {
                try await session(host: host, port: port)
                logger.notice("broker closed the task stream; reconnecting", metadata: ["silo": "\(siloID)"])
            } catch {
                if Task.isCancelled { break }
                logger.warning("session with the broker failed", metadata: ["silo": "\(siloID)", "error": "\(error)"])
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
        keeper.cancel()
        await keeper.value
    }

    /// The task stream ended: the broker has dropped this silo from any round in flight, and the
    /// connection its uploads would use is gone. Training still running is stopped, and every
    /// reservation whose update never left is released (updates are committed before they leave).
    private func abandonRoundsInFlight() async {
        let running = Array(training.values)
        for task in running { task.cancel() }
        for task in running { await task.value }
        secure.removeAll()
        let held = reservations
        reservations.removeAll()
        // In a task of its own: when the gateway is stopping, this one is cancelled, and the store
        // calls would be too (the release would then wait for the next start).
        let (ledger, silo, logger) = (governor.ledger, siloID, logger)
        await Task {
            for (key, ids) in held {
                for id in ids {
                    do { try await ledger.release(id, actor: silo) } catch {
                        logger.error("could not release a reservation", metadata: ["silo": "\(silo)", "id": "\(id)", "error": "\(error)"])
                    }
                }
                logger.notice("released the reservation of a round left when the stream ended", metadata: ["silo": "\(silo)", "round": "\(key)"])
            }
        }.value
    }

    /// A reservation still open when the gateway (re)starts belongs to a round whose update never
    /// left (updates are committed before they are sent): nothing was spent, so it is released.
    private func releaseUnsentReservations() async {
        reservations.removeAll()
        do {
            for entry in try await governor.ledger.backend.entries(dataset: settings.dataset) where entry.state == .reserved {
                try await governor.ledger.release(entry.id, actor: siloID)
                logger.notice("released a reservation left by an earlier run", metadata: [
                    "silo": "\(siloID)", "plan": "\(entry.planHash.prefix(12))", "round": "\(entry.round)"])
            }
        } catch {
            logger.error("could not release leftover reservations", metadata: ["silo": "\(siloID)", "error": "\(error)"])
        }
    }

    private var renewedJustNow = false
    /// Signs this silo's audit head (set when `run` starts).
    private var auditHeads: AuditHeadKeeper?

    /// One session with the broker at `host:port`, abandoned if no welcome arrives within
    /// `settings.welcomeTimeout` (keepalive watches the connection once it is up).
    private func session(host: String, port: Int) async throws {
        let before = activity.sessions
        let timeout = settings.welcomeTimeout
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.openSession(host: host, port: port)
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                if await self.activity.sessions == before {
                    throw RoundError("no welcome from the broker at \(host):\(port) within \(timeout): it accepted the connection but does not answer (frozen, overloaded, or the network drops the handshake); trying the next broker")
                }
                return false
            }
            // The session's end ends the watch; a watch that finds the session welcomed just ends.
            for try await sessionEnded in group where sessionEnded {
                group.cancelAll()
                return
            }
        }
    }

    private func openSession(host: String, port: Int) async throws {
        let transport = try FedGateTransports.client(host: host, port: port, serverName: settings.brokerName,
                                                     credentials: credentials, limits: settings.limits)
        try await withGRPCClient(transport: transport) { client in
            let broker = Fedgate_V1_Broker.Client(wrapping: client)
            let (outbox, continuation) = AsyncStream.makeStream(of: Fedgate_V1_GatewayMessage.self)
            var hello = Fedgate_V1_GatewayMessage()
            hello.hello.datasets = [settings.dataset]
            hello.hello.softwareVersion = "fedgate 0.1"
            continuation.yield(hello)
            defer { continuation.finish() }
            let request = StreamingClientRequest<Fedgate_V1_GatewayMessage> { writer in
                for await message in outbox { try await writer.write(message) }
            }
            try await broker.connect(request: request) { response in
                var heartbeat: Task<Void, Never>?
                defer { heartbeat?.cancel() }
                for try await message in response.messages {
                    switch message.kind {
                    case .welcome(let welcome):
                        await self.connected()
                        // A renewed certificate takes effect on the next connection: end this stream
                        // (no round of ours is in flight right after the welcome) and reconnect at once.
                        do {
                            if try await self.renewIfDue(broker) { await self.markRenewed(); return }
                        } catch {
                            await self.renewalFailed(error)
                        }
                        let interval = Duration.milliseconds(max(100, Int(welcome.heartbeatIntervalMs)))
                        heartbeat = Task {
                            while !Task.isCancelled {
                                try? await Task.sleep(for: interval)
                                var beat = Fedgate_V1_GatewayMessage()
                                beat.heartbeat.sentAtMs = Int64(Date().timeIntervalSince1970 * 1000)
                                continuation.yield(beat)
                            }
                        }
                    case .offer(let offer):
                        var reply = Fedgate_V1_GatewayMessage()
                        reply.offerReply = await self.answer(offer)
                        continuation.yield(reply)
                    case .task(let task):
                        await self.startTraining(task, broker: broker, reply: continuation)
                    case .outcome(let outcome):
                        await self.settle(outcome)
                    case .evaluate(let task):
                        await self.startEvaluation(task, broker: broker, reply: continuation)
                    case .secagg(let step):
                        await self.secureStep(step, broker: broker, reply: continuation)
                    case .auditHead(let head):
                        await self.witnessBroker(head, reply: continuation)
                    case nil:
                        continue
                    }
                }
            }
        }
    }

    /// The broker's signed head: kept as a witness of its trail if it is the broker's and genuine;
    /// answered with this silo's own signed head (released without DP: a sequence number and the
    /// hash of the silo's audit chain).
    private func witnessBroker(_ message: Fedgate_V1_SignedAuditHead, reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) async {
        if let head = message.auditHead {
            if let refusal = await AuditHeadCheck.keep(head, from: settings.brokerName, caPEM: credentials.caPEM, in: governor.ledger.backend, logger: logger) {
                logger.warning("the broker's audit head was refused", metadata: ["silo": "\(siloID)", "reason": "\(refusal)"])
            }
        }
        do {
            guard let mine = try await auditHeads?.current() else { return }
            var answer = Fedgate_V1_GatewayMessage()
            answer.auditHead = Fedgate_V1_SignedAuditHead(mine)
            reply.yield(answer)
        } catch {
            logger.warning("could not sign the audit head for the broker", metadata: ["silo": "\(siloID)", "error": "\(error)"])
        }
    }

    /// Renews the certificate when it is close to expiry: a fresh key and CSR, signed by the broker
    /// over the current mutual-TLS connection; the new pair is written to disk key first.
    func renewIfDue(_ broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> Bool {
        guard let renewBefore = settings.renewBefore else { return false }
        let left = credentials.notAfter.timeIntervalSinceNow
        guard left < Double(renewBefore.components.seconds) else { return false }
        let request = try EnrollmentRequest(identity: credentials.identity)
        var renew = Fedgate_V1_RenewRequest()
        renew.csrPem = try request.csrPEM
        let response = try await broker.renew(renew)
        let renewed = try TLSCredentials(certificatePEM: response.certificatePem, keyPEM: request.keyPEM, caPEM: credentials.caPEM)
        guard renewed.identity == credentials.identity, renewed.notAfter > credentials.notAfter else {
            throw RoundError("the broker returned a certificate for \(renewed.identity) until \(renewed.notAfter); keeping the current one")
        }
        if let keyFile = settings.keyFile, let certificateFile = settings.certificateFile {
            try writeSecret(renewed.keyPEM, to: keyFile)
            try renewed.certificatePEM.write(to: certificateFile, atomically: true, encoding: .utf8)
        }
        logger.notice("certificate renewed; reconnecting with it", metadata: [
            "silo": "\(siloID)", "old_not_after": "\(credentials.notAfter)", "new_not_after": "\(renewed.notAfter)"])
        credentials = renewed
        return true
    }

    private func markRenewed() { renewedJustNow = true }

    private func renewalFailed(_ error: any Error) {
        logger.warning("certificate renewal failed; the current certificate stays in use", metadata: [
            "silo": "\(siloID)", "not_after": "\(credentials.notAfter)", "error": "\(error)"])
    }

    private func connected() {
        activity.sessions += 1
        logger.info("connected to the broker", metadata: ["silo": "\(siloID)", "broker": "\(settings.brokerName)"])
    }

    // MARK: Offers

    /// Judges an offer: the policy decides the plan once, the ledger reserves every round.
    func answer(_ offer: Fedgate_V1_RoundOffer) async -> Fedgate_V1_OfferReply {
        var reply = Fedgate_V1_OfferReply()
        reply.planHash = offer.planHash
        reply.round = offer.round
        do {
            let accepted = try await decide(offer)
            let plan = accepted.plan
            let key = "\(offer.planHash)/\(offer.round)"
            if reservations[key] == nil {
                let event = try plan.roundEvent()
                var ids: [String] = []
                do {
                    for d in plan.datasets {
                        ids.append(try await governor.ledger.reserve(event, dataset: d, plan: offer.planHash, round: Int(offer.round), actor: siloID))
                    }
                } catch {
                    for id in ids { try? await governor.ledger.release(id, actor: siloID) }
                    throw error
                }
                reservations[key] = ids
            }
            await crashPoint("reserved")
            let m = accepted.moments
            reply.accepted = true
            reply.moments.count = UInt64(m.count)
            reply.moments.sums = m.sums
            reply.moments.squares = m.squares
            reply.moments.classes = UInt32(m.classes)
            activity.offersAccepted += 1
            metrics.count("fedgate_offers_total", [("decision", "accepted")])
        } catch {
            reply.accepted = false
            reply.reasons = (error as? OfferRefusal)?.reasons ?? ["\(error)"]
            activity.offersRefused.append(contentsOf: reply.reasons)
            metrics.count("fedgate_offers_total", [("decision", "refused")])
            for reason in reply.reasons { metrics.count("fedgate_policy_refusals_total", [("rule", FedGateMetrics.rule(of: reason))]) }
            logger.notice("offer refused", metadata: ["silo": "\(siloID)", "round": "\(offer.round)", "reasons": "\(reply.reasons)"])
        }
        return reply
    }

    private struct OfferRefusal: Error { let reasons: [String] }

    private func decide(_ offer: Fedgate_V1_RoundOffer) async throws -> AcceptedPlan {
        switch decisions[offer.planHash] {
        case .accepted(let accepted): return accepted
        case .refused(let reasons): throw OfferRefusal(reasons: reasons)
        case nil: break
        }
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(offer.planYaml, file: "plan \(offer.planHash.prefix(12))") } catch {
            throw OfferRefusal(reasons: ["plan: \(error)"])
        }
        guard plan.contentHash == offer.planHash else {
            throw OfferRefusal(reasons: ["plan: its content hashes to \(plan.contentHash.prefix(12))…, not the offered \(offer.planHash.prefix(12))…"])
        }
        guard plan.datasets.contains(settings.dataset) else {
            throw OfferRefusal(reasons: ["datasets: this gateway serves '\(settings.dataset)', the plan asks for \(plan.datasets)"])
        }
        let names = plan.columns.filter { $0 != settings.train.labelName }
        let train: Dataset, test: Dataset
        do { (train, test) = (try settings.train.selecting(features: names), try settings.test.selecting(features: names)) } catch {
            throw OfferRefusal(reasons: ["columns: \(error)"])
        }
        let decision = try await governor.decide(plan, actor: siloID)
        var refusals: [String]
        switch decision.outcome {
        case .accepted: refusals = []
        case .refused: refusals = decision.refusals.map { "\($0.rule): \($0.reason)" }
        case .needsApproval:
            refusals = ["approval: the plan waits for a person's approval at this silo"]
            if let governance = governor.ledger.backend as? any GovernanceBackend,
               let approval = try await governance.approval(planHash: plan.contentHash, silo: governor.policy.silo), approval.allows(at: Date()) {
                refusals = []
            }
        }
        guard refusals.isEmpty else {
            decisions[offer.planHash] = .refused(refusals)
            throw OfferRefusal(reasons: refusals)
        }
        let accepted = AcceptedPlan(plan: plan, train: train, test: test, moments: Standardisation.Moments(of: train))
        decisions[offer.planHash] = .accepted(accepted)
        return accepted
    }

    // MARK: Training

    private func startTraining(_ task: Fedgate_V1_RoundTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                               reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        let key = "\(task.planHash)/\(task.round)"
        training[key] = Task {
            do {
                if task.hasSecagg {
                    try self.advertise(task, reply: reply)
                    await self.crashPoint("advertised", after: .milliseconds(300))
                }
                try await self.train(task, broker: broker)
            } catch {
                self.trainingFailed(key, error)
            }
            self.trainingEnded(key)
        }
    }

    private func trainingEnded(_ key: String) { training.removeValue(forKey: key) }

    private func trainingFailed(_ key: String, _ error: any Error) {
        logger.error("round task failed", metadata: ["silo": "\(siloID)", "task": "\(key)", "error": "\(error)"])
    }

    private func train(_ task: Fedgate_V1_RoundTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        guard case .accepted(let accepted)? = decisions[task.planHash] else {
            throw RoundError("a task for plan \(task.planHash.prefix(12))… this gateway never accepted")
        }
        let plan = accepted.plan
        let payload = try await fetchModel(broker, plan: task.planHash, round: task.round, sha256: task.modelSha256)
        await crashPoint("training")

        var (train, test) = (accepted.train, accepted.test)
        guard task.featureMeans.count == train.featureCount, task.featureScales.count == train.featureCount else {
            throw RoundError("the consortium standardisation has \(task.featureMeans.count) features, this silo \(train.featureCount)")
        }
        let standardisation = Standardisation(means: task.featureMeans, scales: task.featureScales)
        train.standardise(standardisation)
        test.standardise(standardisation)
        let kind = try ModelKind(parsing: plan.model)
        let dimension = try Network.parameterCount(kind: kind, inputs: train.featureCount, classes: Int(task.classes))
        var global = try Network(kind: kind, inputs: train.featureCount, classes: Int(task.classes),
                                 parameters: try ModelPayload.parameters(payload, tensor: "parameters", dimension: dimension))
        // FedPer: this silo's own layers replace the broker's (which never change for them).
        let localRanges = (plan.localLayers ?? []).compactMap { global.layerRanges.indices.contains($0) ? global.layerRanges[$0] : nil }
        if let own = personal[task.planHash], own.count == global.parameters.count {
            for r in localRanges { global.parameters.replaceSubrange(r, with: own[r]) }
        }
        let before = global.evaluate(test)

        var delta: [Float], examples: Int, trained: [String: Double]
        switch plan.executor {
        case .builtin:
            var local = LocalTrainingSettings()
            local.learningRate = settings.learningRate
            local.dp = try DPSGDSettings(noiseMultiplier: try plan.noiseMultiplier(), clipNorm: plan.dp.clipNorm, samplingRate: plan.dp.samplingRate)
            local.dpSteps = plan.localSteps
            if let fixed = settings.fixedNoise { local.repeatableNoise = RepeatableNoise(run: fixed.run, silo: fixed.silo, round: Int(task.round)) }
            var scaffold: LocalTrainer.Scaffold?
            var shuffle = SimulationRandom(seed: UInt64(task.round))
            let update = try LocalTrainer(settings: local).train(global, on: train, scaffold: &scaffold, shuffle: &shuffle)
            delta = update.parameters
            for k in delta.indices { delta[k] -= global.parameters[k] }
            (examples, trained) = (update.examples, ["train_loss": Double(update.meanLoss)])
        case .program(let name):
            // The silo's own program trains; this gateway clips its update and adds the Gaussian
            // noise the plan names (what the ledger reserved: `TrainingPlan.roundEvent`).
            guard let program = governor.policy.programs[name] else {
                throw RoundError("the policy names no program for executor '\(name)'")
            }
            let output = try await ExternalExecutor(name: name, program: program).run(
                model: try ModelPayload.model(global), task: executorTask(task, plan: plan, layers: global.layerSizes, label: train.labelName), train: train,
                dimension: dimension, logger: logger)
            delta = output.delta
            var noise = GaussianNoiseGenerator()
            let mechanism = try GaussianMechanism(clipNorm: plan.dp.clipNorm, noiseMultiplier: try plan.noiseMultiplier())
            _ = try mechanism.apply(to: &delta, noise: &noise)
            (examples, trained) = (output.examples, output.metrics.filter { !["accuracy", "eval_examples"].contains($0.key) })
        }
        if !localRanges.isEmpty {
            // The local layers stay here: kept for the next round, and nothing of them is sent.
            var mine = global.parameters
            for k in mine.indices { mine[k] += delta[k] }
            personal[task.planHash] = mine
            for r in localRanges { for k in r { delta[k] = 0 } }
        }
        let bytes = task.hasSecagg ? [] : try ModelPayload.update(delta)

        let key = "\(task.planHash)/\(task.round)"
        let metrics = trained.merging(["accuracy": before.accuracy, "eval_examples": Double(test.count)]) { $1 }
        activity.lastDelta = delta
        if task.hasSecagg {
            // Under secure aggregation the update leaves only masked, once the broker relayed the shares.
            secure[key]?.update = (delta, TransferHeader(planHash: task.planHash, round: Int(task.round), totalBytes: 4 * delta.count,
                                                         examples: examples, metrics: metrics))
            try await maskAndUploadIfReady(key, broker: broker)
            return
        }
        let header = TransferHeader(planHash: task.planHash, round: Int(task.round), totalBytes: bytes.count, examples: examples,
                                    metrics: metrics)
        try await send(bytes, header, key: key, what: "update", broker: broker)
        await crashPoint("uploaded")
    }

    /// What a silo's own program is told about the round (`task.json`).
    private func executorTask(_ task: Fedgate_V1_RoundTask, plan: TrainingPlan, layers: [Int], label: String) -> [String: any Sendable] {
        ["plan_hash": task.planHash, "round": Int(task.round), "model": plan.model, "layer_sizes": layers, "classes": Int(task.classes),
         "label": label, "columns": plan.columns, "learning_rate": Double(settings.learningRate), "local_steps": plan.localSteps,
         "sampling_rate": plan.dp.samplingRate, "seed": Int(task.round), "standardised": true]
    }

    /// Commits the round's reservation (the update is about to leave the silo: its privacy is spent,
    /// whatever the broker does with it), then uploads the payload in chunks with its SHA-256.
    private func send(_ bytes: [UInt8], _ header: TransferHeader, key: String, what: String,
                      broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        try await commit(key)
        let (ranges, digest) = (chunkRanges(total: bytes.count, chunkBytes: settings.limits.chunkBytes), TransferDigest.hex(bytes))
        let receipt = try await broker.uploadUpdate(request: StreamingClientRequest { writer in
            for chunk in transferMessages(header, chunks: ranges.lazy.map { Data(bytes[$0]) }, sha256: digest) { try await writer.write(chunk) }
        })
        activity.bytesSent += bytes.count
        metrics.count("fedgate_bytes_total", [("direction", "out")], by: bytes.count)
        guard receipt.accepted else { throw RoundError("the broker refused the \(what): \(receipt.reason)") }
        activity.updatesSent += 1
        logger.info("\(what) sent", metadata: ["silo": "\(siloID)", "round": "\(header.round)", "bytes": "\(bytes.count)"])
    }

    /// A round's model from the broker, range after range into one assembler (the broker never has
    /// more than one range of this silo's download queued), checked against the SHA-256 announced.
    private func fetchModel(_ broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>, plan: String, round: UInt32,
                            sha256: String) async throws -> [UInt8] {
        var request = Fedgate_V1_ModelRequest()
        request.planHash = plan
        request.round = round
        let (payload, digest) = try await RangedFetch.file(maximumBytes: settings.limits.maximumPayloadBytes, what: "model for round \(round)",
                                                           rangeBytes: settings.limits.downloadRangeBytes) { offset, length in
            request.offset = offset
            request.length = length
            return try await broker.downloadModel(request) { try await RangedFetch.gather($0.messages, limit: length) }
        }
        activity.bytesReceived += payload.count
        metrics.count("fedgate_bytes_total", [("direction", "in")], by: payload.count)
        // The bytes hash to what the stream declared (checked by the assembler); that must be the announced model.
        guard digest == sha256.lowercased() else { throw RoundError("the model's SHA-256 differs from the one announced for round \(round)") }
        return payload
    }

    // MARK: Evaluation

    private func startEvaluation(_ task: Fedgate_V1_EvaluateTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                                 reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        Task {
            var report = Fedgate_V1_EvaluationReport()
            report.planHash = task.planHash
            report.round = task.round
            do {
                try await self.evaluate(task, broker: broker, into: &report)
            } catch {
                report.error = "\(error)"
                self.logger.error("evaluation failed", metadata: ["silo": "\(self.siloID)", "plan": "\(task.planHash.prefix(12))", "error": "\(error)"])
            }
            var message = Fedgate_V1_GatewayMessage()
            message.evaluation = report
            reply.yield(message)
        }
    }

    /// The plan's final model on this silo's held-out rows, and the ε this silo's ledger committed for the plan.
    private func evaluate(_ task: Fedgate_V1_EvaluateTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                          into report: inout Fedgate_V1_EvaluationReport) async throws {
        guard case .accepted(let accepted)? = decisions[task.planHash] else {
            throw RoundError("an evaluation for plan \(task.planHash.prefix(12))… this gateway never accepted")
        }
        let payload = try await fetchModel(broker, plan: task.planHash, round: task.round, sha256: task.modelSha256)
        var test = accepted.test
        guard task.featureMeans.count == test.featureCount, task.featureScales.count == test.featureCount else {
            throw RoundError("the consortium standardisation has \(task.featureMeans.count) features, this silo \(test.featureCount)")
        }
        test.standardise(Standardisation(means: task.featureMeans, scales: task.featureScales))
        let kind = try ModelKind(parsing: accepted.plan.model)
        let dimension = try Network.parameterCount(kind: kind, inputs: test.featureCount, classes: Int(task.classes))
        let model = try Network(kind: kind, inputs: test.featureCount, classes: Int(task.classes),
                                parameters: try ModelPayload.parameters(payload, tensor: "parameters", dimension: dimension))
        let result = model.evaluate(test)
        let plan = accepted.plan
        if !(plan.localLayers ?? []).isEmpty || (plan.fineTuneEpochs ?? 0) > 0 {
            // The silo's own model: the shared layers, its local layers, fine-tuned on its rows. It
            // never leaves the silo; only its accuracy does.
            var own = model
            if let mine = personal[task.planHash], mine.count == own.parameters.count {
                for i in plan.localLayers ?? [] where own.layerRanges.indices.contains(i) {
                    own.parameters.replaceSubrange(own.layerRanges[i], with: mine[own.layerRanges[i]])
                }
            }
            if let epochs = plan.fineTuneEpochs, epochs > 0 {
                var train = accepted.train
                train.standardise(Standardisation(means: task.featureMeans, scales: task.featureScales))
                var settings = LocalTrainingSettings()
                settings.epochs = epochs
                settings.learningRate = self.settings.learningRate
                var scaffold: LocalTrainer.Scaffold?
                var shuffle = SimulationRandom(seed: 0xf17e)
                own.parameters = try LocalTrainer(settings: settings).train(own, on: train, scaffold: &scaffold, shuffle: &shuffle).parameters
            }
            report.personalised = true
            report.personalisedAccuracy = own.evaluate(test).accuracy
        }
        report.accuracy = result.accuracy
        report.loss = result.logLoss
        report.examples = UInt64(test.count)
        let spent = try await governor.ledger.backend.entries(dataset: settings.dataset)
            .filter { $0.planHash == task.planHash && $0.state == .committed }.map(\.event)
        report.epsilonSpent = spent.isEmpty ? 0 : try epsilon(of: .composed(spent), delta: accepted.plan.dp.delta)
        report.epsilonCap = governor.policy.datasets[settings.dataset]?.caps.perPlan ?? 0
        logger.info("model evaluated", metadata: ["silo": "\(siloID)", "plan": "\(task.planHash.prefix(12))",
                                                  "accuracy": "\(result.accuracy)", "epsilon": "\(report.epsilonSpent)"])
    }

    // MARK: Secure aggregation

    /// Fresh keys for the round, advertised with this silo's certificate binding its identity key.
    private func advertise(_ task: Fedgate_V1_RoundTask, reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) throws {
        let setup = task.secagg
        let configuration = try SecureAggregationConfiguration(round: setup.id, participants: setup.participants, threshold: Int(setup.threshold),
                                                               dimension: try dimension(of: task))
        let identityKey = Curve25519.Signing.PrivateKey()
        var client = try SecureAggregationClient(configuration: configuration, silo: siloID, identityKey: identityKey,
                                                 directory: [siloID: identityKey.publicKey])
        let advertisement = try client.advertiseKeys()
        let binding = try SecAggBinding(id: setup.id, identityKey: identityKey, credentials: credentials)
        secure["\(task.planHash)/\(task.round)"] = SecureSession(client: client, setup: setup)
        reply.yield(secureMessage(task.planHash, task.round, "advertise", try SecAggJSON.encode(SecAggAdvertise(advertisement: advertisement, binding: binding))))
    }

    private func dimension(of task: Fedgate_V1_RoundTask) throws -> Int {
        guard case .accepted(let accepted)? = decisions[task.planHash] else { throw RoundError("a task for a plan this gateway never accepted") }
        return try Network.parameterCount(kind: try ModelKind(parsing: accepted.plan.model), inputs: accepted.train.featureCount, classes: Int(task.classes))
    }

    private func secureMessage(_ plan: String, _ round: UInt32, _ step: String, _ body: Data) -> Fedgate_V1_GatewayMessage {
        var message = Fedgate_V1_GatewayMessage()
        message.secagg.planHash = plan
        message.secagg.round = round
        message.secagg.step = step
        message.secagg.body = body
        return message
    }

    /// The broker's relays: every peer's keys (each binding checked against the CA), the shares
    /// held for this silo, and the unmasking request.
    private func secureStep(_ step: Fedgate_V1_SecAggStep, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                            reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) async {
        let key = "\(step.planHash)/\(step.round)"
        guard let setup = secure[key]?.setup else {
            logger.warning("secure-aggregation step for a round not in progress", metadata: ["silo": "\(siloID)", "step": "\(step.step)"])
            return
        }
        // The session is changed in place, never through a copy held across an await: training
        // sets the update concurrently (actor reentrancy), and a stale copy written back would lose it.
        do {
            switch step.step {
            case "keys":
                let keys = try SecAggJSON.decode(SecAggKeys.self, step.body, step: step.step)
                let ca = try Certificate(pemEncoded: credentials.caPEM)
                var directory: [SiloID: Curve25519.Signing.PublicKey] = [:]
                for binding in keys.bindings where setup.participants.contains(binding.silo) {
                    directory[binding.silo] = try await binding.verified(id: setup.id, ca: ca)
                }
                for silo in setup.participants where directory[silo] == nil {
                    // A participant that did not advertise: the protocol treats it as dropped; it has no key to check.
                    directory[silo] = Curve25519.Signing.PrivateKey().publicKey
                }
                guard secure[key] != nil else { return }
                try secure[key]!.client.learnIdentities(directory)
                let shares = try secure[key]!.client.shareKeys(keys.advertisements)
                reply.yield(secureMessage(step.planHash, step.round, "shares", try SecAggJSON.encode(shares)))
                await crashPoint("shared", after: .milliseconds(300))
            case "relay":
                if settings.dropOutBeforeMasking {
                    secure.removeValue(forKey: key)
                    reply.finish()
                    return
                }
                secure[key]!.relay = try SecAggJSON.decode(SecAggRelay.self, step.body, step: step.step)
                // Not on the task stream's loop: the upload may be long and the stream must keep flowing.
                Task {
                    do { try await self.maskAndUploadIfReady(key, broker: broker) } catch { self.maskingFailed(key, error) }
                }
            case "unmask":
                let request = try SecAggJSON.decode(UnmaskingRequest.self, step.body, step: step.step)
                await crashPoint("unmasking")
                let response = try secure[key]!.client.unmask(request)
                reply.yield(secureMessage(step.planHash, step.round, "unmasked", try SecAggJSON.encode(response)))
            default:
                throw SecureAggregationError.malformed("unknown step '\(step.step)'")
            }
        } catch {
            logger.error("secure aggregation step refused; this silo leaves the round", metadata: [
                "silo": "\(siloID)", "step": "\(step.step)", "reason": "\(error)"])
            secure.removeValue(forKey: key)
        }
    }

    /// Once both the local update and the broker's relay are here: clip and encode the update, add
    /// this silo's share of the distributed noise, mask it, commit the privacy spent, upload it.
    private func maskAndUploadIfReady(_ key: String, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        guard let session = secure[key], let (delta, header) = session.update, let relay = session.relay, !session.masked else { return }
        secure[key]!.masked = true
        let setup = session.setup
        let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: setup.participants.count, honestSilos: Int(setup.honestSilos),
                                         noiseMultiplier: setup.noiseMultiplier)
        var rng = ChaCha20Random()
        var encoded = try noise.codec.encode(delta, using: &rng)
        noise.addNoise(to: &encoded, using: &rng)
        let input = try secure[key]!.client.maskedInput(encoded: encoded, shares: relay.shares, sharedKeys: relay.sharers)
        precondition(1.littleEndian == 1, "the wire format is little-endian")
        let littleEndian = input.values.withUnsafeBytes { Array(UnsafeBufferPointer(start: $0.baseAddress?.assumingMemoryBound(to: UInt8.self), count: $0.count)) }
        try await send(littleEndian, header, key: key, what: "masked update", broker: broker)
        await crashPoint("masked")
    }

    /// A test's crash point (`Settings.crashPoints`): this process stops the first time it reaches
    /// `phase` (after `after`, so what it just sent leaves first), as a power cut would.
    private func crashPoint(_ phase: String, after delay: Duration = .zero) async {
        guard settings.crashPoints.effect(at: phase) != nil else { return }
        if delay > .zero { try? await Task.sleep(for: delay) }
        settings.crashPoints.reach(phase, logger: logger)
    }

    private func maskingFailed(_ key: String, _ error: any Error) {
        logger.error("masked update not sent", metadata: ["silo": "\(siloID)", "task": "\(key)", "error": "\(error)"])
    }

    private func commit(_ key: String) async throws {
        for id in reservations.removeValue(forKey: key) ?? [] { try await governor.ledger.commit(id, actor: siloID) }
        await refreshBudgetMetrics()
    }

    /// The round is over: a reservation still open was never spent (no update left), so it is released.
    private func settle(_ outcome: Fedgate_V1_RoundOutcome) async {
        let key = "\(outcome.planHash)/\(outcome.round)"
        if let task = training[key] { await task.value }
        secure.removeValue(forKey: key)
        for id in reservations.removeValue(forKey: key) ?? [] {
            do { try await governor.ledger.release(id, actor: siloID) } catch {
                logger.error("could not release a reservation", metadata: ["silo": "\(siloID)", "id": "\(id)", "error": "\(error)"])
            }
        }
        metrics.count("fedgate_rounds_total", [("outcome", ["committed", "aborted"].contains(outcome.state) ? outcome.state : "other")])
        await refreshBudgetMetrics()
        logger.info("round over", metadata: ["silo": "\(siloID)", "round": "\(outcome.round)", "state": "\(outcome.state)"])
    }
}
