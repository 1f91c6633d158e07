import Crypto
import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateSimulation
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging

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
        public init() {}
    }

    /// Where a plan stands.
    public struct PlanStatus: Sendable {
        public enum State: String, Sendable { case running, finished, failed, cancelled }
        public struct Round: Sendable {
            public let number: Int
            public let state: String
            public let participants: [String]
            public let refused: [String: [String]]
            /// Accuracy of the previous global model on the participants' held-out rows (their reports, weighted).
            public let reportedAccuracy: Double?
            public let reason: String?
        }
        public var state: State
        public var rounds: [Round] = []
        public var reason: String?
        /// The broker's mirror of each silo's privacy spent on this plan: the plan's DP-SGD event for
        /// every committed round the silo took part in, composed (each silo's ledger is the truth;
        /// the mirror is for following a plan live and for planning).
        public var epsilonMirror: [String: Double] = [:]
        /// The current global model's parameters and layer sizes.
        public var parameters: [Float] = []
        public var layerSizes: [Int] = []
        public var bytesIn = 0
        public var bytesOut = 0
        /// The final model's federated evaluation, the plan's gate on it, and the version it became.
        public var evaluation: EvaluationSummary?
        public var gate: GateDecision?
        public var modelVersion: Int?
        /// The round in flight: its number, phase, who accepted and who refused it so far.
        public var current: (round: Int, phase: String, accepted: [String], refused: [String: [String]])?
        /// Silos that refused the plan, with their reasons (first refusal per silo).
        public var refusals: [String: [String]] {
            var out: [String: [String]] = [:]
            for (silo, reasons) in current?.refused ?? [:] { out[silo] = reasons }
            for r in rounds { for (silo, reasons) in r.refused where out[silo] == nil { out[silo] = reasons } }
            return out
        }
    }

    /// The final evaluation of a plan's model: who was asked and what they answered.
    private struct FinalEvaluation {
        let round: Int
        let model: ModelFile
        let expected: Set<String>
        var reports: [String: Fedgate_V1_EvaluationReport] = [:]
    }

    private struct Session {
        let token: UInt64
        let outbox: AsyncStream<Fedgate_V1_BrokerMessage>.Continuation
        let datasets: Set<String>
        let certificateNotAfter: Date?
        var lastSeen: ContinuousClock.Instant
    }

    private struct ActiveRound {
        let number: Int
        var progress: RoundProgress
        /// What feature moments from this plan's silos may look like (from its columns and model).
        let momentsShape: (features: ClosedRange<Int>, classes: ClosedRange<Int>)
        /// The round's model file, cut into chunks as each download reads it (it shares the
        /// global model's storage; let go before the model is updated in place).
        var model: ModelFile?
        var dimension = 0
        /// FedAvg folds each valid update in as it arrives: one accumulator, whatever the number of
        /// silos. Other strategies (robust ones need every update) keep the updates in `progress`.
        var folded: WeightedAverage?
        var rejected: [UpdateRejection] = []
        /// A secure-aggregation round: the protocol's broker side and where it stands.
        var secagg: SecureRound?
    }

    /// The broker's side of one secure-aggregation round. It relays keys and shares and folds masked
    /// inputs; it never holds a single silo's update in the clear.
    private struct SecureRound {
        enum Phase { case advertising, sharing, masking, unmasking }
        let setup: Fedgate_V1_SecAggSetup
        var server: SecureAggregationServer
        var phase = Phase.advertising
        var bindings: [String: SecAggBinding] = [:]
        var shared: Set<String> = []
        var request: UnmaskingRequest?
        var responses: [String: UnmaskingResponse] = [:]
        var gone: Set<String> = []
        var alive: Set<String> { Set(setup.participants).subtracting(gone) }
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, Never>
        let timer: Task<Void, Never>
    }
    private var nextWaiter: UInt64 = 0

    public let settings: Settings
    private let chunkBytes: Int
    let store: any BrokerStore
    let logger: Logger
    private var sessions: [String: Session] = [:]
    private var nextToken: UInt64 = 0
    private var active: [String: ActiveRound] = [:]
    private var evaluations: [String: FinalEvaluation] = [:]
    /// Per plan, for the ε mirror: the plan with its noise multiplier pinned (a target ε is
    /// calibrated once here, not again after every round); absent when its events cannot be made.
    private var mirrorPlans: [String: TrainingPlan] = [:]

    private static func mirrorPlan(_ plan: TrainingPlan) -> TrainingPlan? {
        var pinned = plan
        guard let z = try? plan.noiseMultiplier() else { return nil }
        pinned.dp.noiseMultiplier = z
        return (try? pinned.roundEvent()) == nil ? nil : pinned
    }
    private var waiters: [String: Waiter] = [:]
    private var plans: [String: PlanStatus] = [:]
    private var runs: [String: Task<Void, Never>] = [:]
    private var monitor: Task<Void, Never>?
    /// Set by `shutdown`: plans stopped then stay running in the store, for the next broker.
    private var stopping = false
    /// The leader lease this broker holds, checked by every round commit (nil: no lease).
    private var fence: LeaseFence?

    /// Signs the broker's audit head for the silos, and the CA their heads are checked against
    /// (`exchangeAuditHeads`); when each silo's head last arrived.
    var auditHeads: (keeper: AuditHeadKeeper, caPEM: String)?
    var lastWitnessed: [String: ContinuousClock.Instant] = [:]

    public nonisolated let metrics: FedGateMetrics
    /// When each plan's round in flight was opened (for the round-duration metric).
    private var roundStarted: [String: ContinuousClock.Instant] = [:]

    public init(settings: Settings = .init(), store: any BrokerStore, chunkBytes: Int = TransportLimits().chunkBytes,
                metrics: FedGateMetrics = FedGateMetrics(), logger: Logger) {
        self.settings = settings
        self.metrics = metrics
        self.chunkBytes = chunkBytes
        self.store = store
        self.logger = logger
    }

    // MARK: Gateways

    /// A gateway opened its task stream. A second stream from the same silo replaces the first.
    public func open(silo: String, datasets: [String], certificateNotAfter: Date? = nil,
                     outbox: AsyncStream<Fedgate_V1_BrokerMessage>.Continuation) -> UInt64 {
        startMonitorIfNeeded()
        nextToken += 1
        if let old = sessions[silo] {
            old.outbox.finish()
            logger.notice("gateway reconnected; earlier stream closed", metadata: ["silo": "\(silo)"])
        }
        sessions[silo] = Session(token: nextToken, outbox: outbox, datasets: Set(datasets), certificateNotAfter: certificateNotAfter, lastSeen: .now)
        metrics.set("fedgate_connected_gateways", Double(sessions.count))
        var welcome = Fedgate_V1_Welcome()
        welcome.brokerID = settings.brokerID
        welcome.heartbeatIntervalMs = UInt32(settings.heartbeatInterval.milliseconds)
        var message = Fedgate_V1_BrokerMessage()
        message.welcome = welcome
        outbox.yield(message)
        logger.info("gateway connected", metadata: ["silo": "\(silo)", "datasets": "\(datasets.sorted())"])
        sendAuditHead(to: [silo])
        return nextToken
    }

    /// A gateway's stream ended (or was closed): it no longer counts on any round it is in.
    public func close(silo: String, token: UInt64) {
        guard let s = sessions[silo], s.token == token else { return }
        s.outbox.finish()
        sessions.removeValue(forKey: silo)
        metrics.set("fedgate_connected_gateways", Double(sessions.count))
        logger.notice("gateway disconnected", metadata: ["silo": "\(silo)"])
        for plan in active.keys {
            active[plan]!.progress.drop(silo)
            active[plan]!.secagg?.gone.insert(silo)
            wakeIfDone(plan)
        }
    }

    func isSession(_ silo: String, _ token: UInt64) -> Bool { sessions[silo]?.token == token }

    public func heartbeat(silo: String, token: UInt64) {
        if sessions[silo]?.token == token { sessions[silo]!.lastSeen = .now }
    }

    public var connectedSilos: [String] { sessions.keys.sorted() }

    /// The expiry of the certificate a connected silo's stream was opened with.
    public func certificateNotAfter(of silo: String) -> Date? { sessions[silo]?.certificateNotAfter }

    /// A gateway's answer to an offer. Its feature moments are checked against the plan before
    /// anything is sized from them: an answer with impossible moments counts as that silo's
    /// refusal (audited as `reply.reject`), never as an acceptance.
    public func reply(_ reply: Fedgate_V1_OfferReply, from silo: String, token: UInt64) async {
        heartbeat(silo: silo, token: token)
        guard var round = active[reply.planHash], round.number == Int(reply.round) else {
            logger.warning("answer to an offer that is not open", metadata: ["silo": "\(silo)", "plan": "\(PeerText.bounded(reply.planHash.prefix(12)))",
                                                                           "round": "\(reply.round)"])
            return
        }
        var accepted = reply.accepted
        var reasons = PeerText.bounded(reply.reasons)
        var moments: Standardisation.Moments?
        if accepted && reply.hasMoments {
            let m = Standardisation.Moments(count: Int(clamping: reply.moments.count), sums: reply.moments.sums,
                                            squares: reply.moments.squares, classes: Int(reply.moments.classes))
            if let problem = m.problem(features: round.momentsShape.features, classes: round.momentsShape.classes) {
                accepted = false
                reasons = ["broker: the silo's feature moments were refused: \(problem)"]
                metrics.count("fedgate_replies_rejected_total")
                logger.warning("offer answer rejected", metadata: ["silo": "\(silo)", "round": "\(reply.round)", "reason": "\(problem)"])
                try? await durable { try await self.store.audit(actor: self.settings.brokerID, action: "reply.reject", subject: silo, payload: canonicalPayload([
                    "plan": reply.planHash, "round": Int(reply.round), "reason": problem]), at: Date()) }
                // The round may have moved on while the record was written.
                guard let current = active[reply.planHash], current.number == Int(reply.round) else { return }
                round = current
            } else {
                moments = m
            }
        }
        do {
            try round.progress.reply(from: silo, accepted: accepted, reasons: reasons, moments: moments)
            active[reply.planHash] = round
            metrics.count("fedgate_offer_answers_total", [("answer", accepted ? "accepted" : "refused")])
            for reason in reasons where !accepted {
                metrics.count("fedgate_offer_refusals_total", [("rule", FedGateMetrics.rule(of: reason))])
            }
            logger.info(accepted ? "offer accepted" : "offer refused", metadata: ["silo": "\(silo)", "round": "\(reply.round)", "reasons": "\(reasons)"])
            wakeIfDone(reply.planHash)
        } catch {
            logger.warning("answer refused", metadata: ["silo": "\(silo)", "reason": "\(error)"])
        }
    }

    /// A silo's evaluation of a plan's final model.
    public func evaluation(_ report: Fedgate_V1_EvaluationReport, from silo: String, token: UInt64) {
        heartbeat(silo: silo, token: token)
        guard let e = evaluations[report.planHash], e.round == Int(report.round), e.expected.contains(silo), e.reports[silo] == nil else {
            logger.warning("evaluation report not asked for", metadata: ["silo": "\(silo)", "plan": "\(PeerText.bounded(report.planHash.prefix(12)))"])
            return
        }
        var report = report
        report.error = PeerText.bounded(report.error)
        if report.error.isEmpty, let problem = Self.problem(of: report) {
            // An impossible figure counts as that silo's failure to evaluate, never as a figure.
            logger.warning("evaluation report refused", metadata: ["silo": "\(silo)", "reason": "\(problem)"])
            report.error = "broker: the report was refused: \(problem)"
        }
        evaluations[report.planHash]!.reports[silo] = report
        wakeIfDone(report.planHash)
    }

    /// Why an evaluation report's figures are impossible, or nil.
    static func problem(of r: Fedgate_V1_EvaluationReport) -> String? {
        guard r.accuracy.isFinite, (0...1).contains(r.accuracy) else { return "accuracy \(r.accuracy) is not in 0…1" }
        guard r.examples >= 1, r.examples <= 1 << 40 else { return "\(r.examples) held-out rows" }
        guard r.epsilonSpent.isFinite, r.epsilonSpent >= 0, r.epsilonCap.isFinite, r.epsilonCap >= 0 else {
            return "ε spent \(r.epsilonSpent) and cap \(r.epsilonCap) are not finite and non-negative"
        }
        if r.personalised, !(r.personalisedAccuracy.isFinite && (0...1).contains(r.personalisedAccuracy)) {
            return "personalised accuracy \(r.personalisedAccuracy) is not in 0…1"
        }
        return nil
    }

    /// A silo's step of a secure-aggregation round (what it says it is must match who sent it).
    public func secagg(_ step: Fedgate_V1_SecAggStep, from silo: String, token: UInt64) {
        heartbeat(silo: silo, token: token)
        let hash = step.planHash
        guard var sa = active[hash]?.secagg, active[hash]?.number == Int(step.round), sa.alive.contains(silo) else {
            logger.warning("secure-aggregation step not expected", metadata: ["silo": "\(silo)", "step": "\(step.step)"])
            return
        }
        do {
            switch (step.step, sa.phase) {
            case ("advertise", .advertising):
                let body = try SecAggJSON.decode(SecAggAdvertise.self, step.body, step: step.step)
                guard body.advertisement.silo == silo, body.binding.silo == silo else {
                    throw SecureAggregationError.malformed("\(silo) advertised keys as '\(body.advertisement.silo)'")
                }
                try sa.server.receive(body.advertisement)
                sa.bindings[silo] = body.binding
            case ("shares", .sharing):
                let shares = try SecAggJSON.decode([EncryptedShare].self, step.body, step: step.step)
                guard shares.allSatisfy({ $0.from == silo }) else { throw SecureAggregationError.malformed("\(silo) sent shares as another silo") }
                try sa.server.receive(shares: shares, from: silo)
                sa.shared.insert(silo)
            case ("unmasked", .unmasking):
                let response = try SecAggJSON.decode(UnmaskingResponse.self, step.body, step: step.step)
                guard response.silo == silo else { throw SecureAggregationError.malformed("\(silo) answered the unmasking as '\(response.silo)'") }
                sa.responses[silo] = response
            default:
                throw SecureAggregationError.malformed("a '\(step.step)' step out of order")
            }
            active[hash]!.secagg = sa
            wakeIfDone(hash)
        } catch {
            logger.warning("secure-aggregation step refused", metadata: ["silo": "\(silo)", "step": "\(step.step)", "reason": "\(error)"])
        }
    }

    /// The model a participant downloads, with its checksum.
    public func model(for silo: String, plan: String, round: Int) throws -> ModelFile {
        if let e = evaluations[plan], e.round == round {
            guard e.expected.contains(silo) else { throw RoundError("\(silo) is not asked to evaluate plan \(plan.prefix(12))…") }
            plans[plan]?.bytesOut += e.model.bytes
            metrics.count("fedgate_bytes_total", [("direction", "out")], by: e.model.bytes)
            return e.model
        }
        guard let r = active[plan], r.number == round, let model = r.model else {
            throw RoundError("round \(round) of plan \(plan.prefix(12))… is not training")
        }
        guard r.progress.isParticipant(silo) else { throw RoundError("\(silo) is not a participant of round \(round)") }
        plans[plan]?.bytesOut += model.bytes
        metrics.count("fedgate_bytes_total", [("direction", "out")], by: model.bytes)
        return model
    }

    /// A participant's update, already reassembled and checksummed by the transport. One that is
    /// refused (not a participant of a round taking updates, wrong shape, not float32, unreadable)
    /// is audited as `update.reject` with the reason, and the reason goes back to the silo.
    public func upload(from silo: String, header: TransferHeader, payload: [UInt8]) async throws {
        do {
            try accept(from: silo, header: header, payload: payload)
            metrics.count("fedgate_bytes_total", [("direction", "in")], by: payload.count)
        } catch {
            let reason = (error as? UpdateRefused)?.reason ?? .unreadable
            metrics.count("fedgate_updates_rejected_total", [("reason", reason.rawValue)])
            logger.warning("update refused", metadata: ["silo": "\(silo)", "round": "\(header.round)", "reason": "\(error)"])
            try await store.audit(actor: settings.brokerID, action: "update.reject", subject: silo, payload: canonicalPayload([
                "plan": header.planHash, "round": header.round, "bytes": payload.count, "reason": "\(error)"]), at: Date())
            throw error
        }
    }

    private func accept(from silo: String, header: TransferHeader, payload: [UInt8]) throws {
        let hash = header.planHash
        // Read what is needed without holding a copy of the round: a copy alive while the
        // accumulator is folded in place below would make that fold copy a model-sized array.
        guard active[hash]?.number == header.round else {
            throw UpdateRefused(.roundClosed, "round \(header.round) of plan \(hash.prefix(12))… is not taking updates")
        }
        guard active[hash]!.progress.isParticipant(silo) else {
            throw UpdateRefused(.notParticipant, "\(silo) is not a participant of round \(header.round)")
        }
        guard !active[hash]!.progress.hasUploaded(silo) else {
            throw UpdateRefused(.duplicate, "\(silo) already uploaded its update for round \(header.round)")
        }
        let dimension = active[hash]!.dimension
        if let id = active[hash]!.secagg?.setup.id {
            // A masked input: `dimension` little-endian uint32 values, folded into the masked sum.
            guard payload.count == 4 * dimension else {
                throw UpdateRefused(.shape, "a masked input of \(payload.count) bytes; this round's is \(4 * dimension)")
            }
            let values = payload.withUnsafeBytes { raw in (0..<dimension).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
            do { try active[hash]!.secagg!.server.receive(MaskedInput(round: id, silo: silo, values: values)) } catch let error as SecureAggregationError {
                if case .replay = error { throw UpdateRefused(.duplicate, "\(error)") }
                throw UpdateRefused(.unreadable, "\(error)")
            }
            guard (1...(1 << 40)).contains(header.examples) else {
                throw UpdateRefused(.examples, "\(header.examples) examples (allowed 1…\(1 << 40))")
            }
            try active[hash]!.progress.upload(ClientUpdate(silo: silo, delta: [], examples: header.examples), metrics: UploadMetrics.checked(header.metrics))
            plans[hash]?.bytesIn += payload.count
            logger.info("masked input received", metadata: ["silo": "\(silo)", "round": "\(header.round)", "bytes": "\(payload.count)"])
            wakeIfDone(hash)
            return
        }
        let entry: SafeTensors.Entry
        do { entry = try ModelPayload.entry(payload, tensor: "delta", dimension: dimension) } catch let error as ModelPayload.WrongShape {
            throw UpdateRefused(.shape, "\(error)")
        } catch {
            throw UpdateRefused(.unreadable, "\(error)")
        }
        // Every update is checked before it counts: a refused one is answered with its reason, is
        // not a participant's contribution, and does not count towards the quorum.
        let validator = UpdateValidator(dimension: dimension, maximumNorm: settings.maximumUpdateNorm)
        let metrics = UploadMetrics.checked(header.metrics)
        func check(_ delta: UnsafeBufferPointer<Float>) -> UpdateRejection? { validator.check(silo: silo, examples: header.examples, delta: delta) }
        if let rejection = entry.withFloat32Buffer(check) ?? entry.floats.withUnsafeBufferPointer(check) {
            throw UpdateRefused(rejection)
        }
        if active[hash]!.folded != nil {
            try active[hash]!.progress.upload(ClientUpdate(silo: silo, delta: [], examples: header.examples), metrics: metrics)
            func fold(_ delta: UnsafeBufferPointer<Float>) { active[hash]!.folded!.fold(delta, weight: Double(header.examples)) }
            if entry.withFloat32Buffer(fold) == nil { entry.floats.withUnsafeBufferPointer(fold) }
        } else {
            try active[hash]!.progress.upload(ClientUpdate(silo: silo, delta: entry.floats, examples: header.examples), metrics: metrics)
        }
        plans[hash]?.bytesIn += payload.count
        logger.info("update received", metadata: ["silo": "\(silo)", "round": "\(header.round)", "bytes": "\(payload.count)"])
        wakeIfDone(hash)
    }

    // MARK: Plans

    /// Starts running `plan`'s rounds; returns its hash. Submitting a running plan again is refused.
    public func submit(_ plan: TrainingPlan, text: String, by submitter: String) async throws -> String {
        let hash = plan.contentHash
        if let p = plans[hash], p.state == .running { throw RoundError("plan \(hash.prefix(12))… is already running") }
        _ = try makeStrategy(plan.strategy, byzantine: 0)
        _ = try ModelKind(parsing: plan.model)
        // Secure aggregation needs the mean of equal weights and FedAvg's sum: robust strategies
        // need every update in the clear, which secure aggregation exists to prevent.
        if let local = plan.localLayers, !local.isEmpty {
            let layers = Network.layerCount(try ModelKind(parsing: plan.model))
            guard local.allSatisfy({ $0 < layers }), Set(local).count < layers else {
                throw PlanUnsupported("personalisation.local_layers: \(plan.model) has layers 0…\(layers - 1); name some of them, not all "
                                      + "(at least one layer must be shared)")
            }
        }
        guard !plan.secureAggregation || plan.strategy == "fedavg" else {
            throw PlanUnsupported("secure_aggregation: only with strategy fedavg (\(plan.strategy) needs every update in the clear)")
        }
        let now = Date()
        try await store.startPlanRun(PlanRun(planHash: hash, planYAML: text, submitter: submitter, state: .running, submittedAt: now, updatedAt: now),
                                     payload: canonicalPayload(["purpose": plan.purpose, "rounds": plan.rounds, "strategy": plan.strategy]),
                                     actor: submitter)
        plans[hash] = PlanStatus(state: .running)
        mirrorPlans[hash] = Self.mirrorPlan(plan)
        runs[hash] = Task { await self.run(plan, text: text, hash: hash, from: .start) }
        logger.info("plan submitted", metadata: ["plan": "\(hash.prefix(12))", "by": "\(submitter)", "rounds": "\(plan.rounds)"])
        return hash
    }

    public func status(_ hash: String) -> PlanStatus? {
        guard var status = plans[hash] else { return nil }
        if let e = evaluations[hash] {
            status.current = (e.round, "evaluating", e.expected.sorted(), [:])
        } else if let r = active[hash] {
            let phase = switch r.progress.phase { case .offering: "offering"; case .training: "training"; case .closed: "aggregating" }
            status.current = (r.number, phase, r.progress.accepted.sorted(), r.progress.refused)
        }
        return status
    }

    /// Stops a running plan: the round in flight is aborted (its silos release their reservations).
    public func cancel(_ hash: String, by person: String) async throws -> PlanStatus {
        guard let status = plans[hash] else { throw RoundError("no plan \(hash.prefix(12))… at this broker") }
        guard status.state == .running, let run = runs[hash] else { return status }
        try await store.audit(actor: person, action: "plan.cancel", subject: hash, payload: canonicalPayload(["state": status.state.rawValue]), at: Date())
        run.cancel()
        wake(hash)
        await run.value
        return plans[hash] ?? status
    }

    /// Where a plan's run starts: from round 1, or after a restart from the store's checkpoint.
    struct Resume {
        var global: Network?
        var standardisation: Standardisation?
        var participants = Set<String>()
        var lastCommitted: Int?
        var nextRound = 1
        static let start = Resume()

        static func encode(_ s: Standardisation, classes: Int) throws -> String {
            let data = try JSONSerialization.data(withJSONObject: ["means": s.means.map(Double.init), "scales": s.scales.map(Double.init), "classes": classes],
                                                  options: [.sortedKeys])
            return String(decoding: data, as: UTF8.self)
        }

        /// The checkpoint's model and standardisation, checked against the plan's model kind.
        static func checkpoint(_ c: PlanRun.Checkpoint, content: [UInt8], kind: ModelKind) throws -> (Network, Standardisation) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(c.standardisation.utf8)) as? [String: Any],
                  let means = object["means"] as? [Double], let scales = object["scales"] as? [Double], let classes = object["classes"] as? Int,
                  means.count == scales.count else {
                throw RoundError("the checkpoint of round \(c.round) has no readable standardisation")
            }
            let file = try SafeTensors(bytes: content)
            guard let entry = file.entries["parameters"], entry.dtype == .f32 else {
                throw RoundError("the checkpoint of round \(c.round) has no float32 'parameters' tensor")
            }
            let network = try Network(kind: kind, inputs: means.count, classes: classes, parameters: entry.floats)
            return (network, Standardisation(means: means.map(Float.init), scales: scales.map(Float.init)))
        }
    }

    /// Picks up the plans the store says are running (after a restart, or on taking the lead from
    /// another broker): a round left in flight is aborted (its silos released their reservations
    /// when their streams ended), and each plan goes on from its last committed round's checkpoint.
    /// Returns the plans resumed.
    @discardableResult
    public func recover(fence: LeaseFence? = nil) async throws -> [String] {
        self.fence = fence
        var resumed: [String] = []
        for run in try await store.planRuns() where run.state == .running && plans[run.planHash]?.state != .running {
            let hash = run.planHash
            let plan: TrainingPlan
            do { plan = try TrainingPlan.parse(run.planYAML, file: "plan \(hash.prefix(12))… in the store") } catch {
                try await store.finishPlanRun(planHash: hash, state: .failed, reason: "the stored plan no longer parses: \(error)", fence: fence, at: Date(), actor: settings.brokerID)
                continue
            }
            var status = PlanStatus(state: .running)
            var resume = Resume()
            for record in try await store.rounds(planHash: hash) {
                var state = record.state
                var reason: String?
                if state != .committed && state != .aborted {
                    reason = "the broker stopped while the round was \(state.rawValue)"
                    try await store.advanceRound(planHash: hash, number: record.number, to: .aborted, survivors: [], at: Date(), actor: settings.brokerID)
                    try await store.audit(actor: settings.brokerID, action: "round.abort", subject: hash,
                                          payload: canonicalPayload(["round": record.number, "reason": reason!]), at: Date())
                    state = .aborted
                }
                status.rounds.append(.init(number: record.number, state: state.rawValue, participants: state == .committed ? record.survivors : [],
                                           refused: [:], reportedAccuracy: nil, reason: reason))
                if state == .committed { resume.participants.formUnion(record.survivors) }
                resume.nextRound = record.number + 1
            }
            if let c = run.checkpoint {
                guard let content = try await store.modelContent(sha256: c.contentSHA256) else {
                    throw RoundError("plan \(hash.prefix(12))…: the checkpoint of round \(c.round) is missing from the store")
                }
                (resume.global, resume.standardisation) = try Resume.checkpoint(c, content: content, kind: try ModelKind(parsing: plan.model))
                resume.lastCommitted = c.round
                status.parameters = resume.global!.parameters
                status.layerSizes = resume.global!.layerSizes
            }
            plans[hash] = status
            mirrorPlans[hash] = Self.mirrorPlan(plan)
            updateMirror(hash, for: Array(resume.participants))
            try await store.audit(actor: settings.brokerID, action: "plan.resume", subject: hash,
                                  payload: canonicalPayload(["next_round": resume.nextRound, "checkpoint_round": resume.lastCommitted ?? NSNull()]), at: Date())
            logger.notice("plan resumed from the store", metadata: ["plan": "\(hash.prefix(12))", "next round": "\(resume.nextRound)",
                                                                    "checkpoint": "\(resume.lastCommitted.map(String.init) ?? "none")"])
            runs[hash] = Task { [resume] in await self.run(plan, text: run.planYAML, hash: hash, from: resume) }
            resumed.append(hash)
        }
        return resumed
    }

    /// The ε mirror of `silos` after a committed round (`TrainingPlan.event(rounds:)`), one
    /// accountant call per distinct count.
    private func updateMirror(_ hash: String, for silos: [String]) {
        guard let m = mirrorPlans[hash] else { return }
        var byCount: [Int: Double] = [:]
        for silo in silos {
            let rounds = plans[hash]?.rounds.filter { $0.state == "committed" && $0.participants.contains(silo) }.count ?? 0
            if byCount[rounds] == nil {
                byCount[rounds] = try? epsilon(of: try m.event(rounds: rounds), delta: m.dp.delta)
            }
            plans[hash]?.epsilonMirror[silo] = byCount[rounds]
            if let e = byCount[rounds] { metrics.set("fedgate_epsilon_mirror", [("silo", silo)], e) }
        }
    }

    /// Records how a plan ended; a refusal (a lease taken by another broker, a store gone) is logged,
    /// since the run is over either way.
    private func recordEnd(_ hash: String, _ state: PlanRun.State, reason: String) async {
        do { try await store.finishPlanRun(planHash: hash, state: state, reason: reason, fence: fence, at: Date(), actor: settings.brokerID) } catch {
            logger.error("could not record the plan's end", metadata: ["plan": "\(hash.prefix(12))", "state": "\(state.rawValue)", "error": "\(error)"])
        }
    }

    private func roundEnded(_ hash: String, _ outcome: String, participants: Int) {
        metrics.count("fedgate_rounds_total", [("outcome", outcome)])
        if outcome == "committed" { metrics.set("fedgate_round_participants", Double(participants)) }
        if let started = roundStarted.removeValue(forKey: hash) {
            metrics.time("fedgate_round_duration_seconds", [("outcome", outcome)], ContinuousClock.now - started)
        }
    }

    /// Tests of crash recovery (debug builds only): `FEDGATE_TESTING_CRASH_AT=phase:round` kills this
    /// process with SIGKILL right after the round reaches that phase, as a power cut would;
    /// `phase:round:stop` freezes it there with SIGSTOP instead (a hung machine, for fencing tests).
    /// Several points are separated by commas.
    private func crashPoint(_ phase: String, _ round: Int) {
        #if DEBUG
        guard let points = ProcessInfo.processInfo.environment["FEDGATE_TESTING_CRASH_AT"]?.split(separator: ",").map(String.init) else { return }
        if points.contains("\(phase):\(round)") {
            logger.critical("test crash point reached; killing this process", metadata: ["phase": "\(phase)", "round": "\(round)"])
            kill(getpid(), SIGKILL)
        } else if points.contains("\(phase):\(round):stop") {
            logger.critical("test pause point reached; stopping this process", metadata: ["phase": "\(phase)", "round": "\(round)"])
            kill(getpid(), SIGSTOP)
        }
        #endif
    }

    /// Waits until the plan stops running.
    public func finished(_ hash: String) async -> PlanStatus? {
        if let task = runs[hash] { await task.value }
        return plans[hash]
    }

    /// Stops every plan and closes every stream (graceful shutdown). Plans stay running in the
    /// store: the next broker to start on it resumes them.
    public func shutdown() {
        stopping = true
        for task in runs.values { task.cancel() }
        for plan in Array(waiters.keys) { wake(plan) }
        for s in sessions.values { s.outbox.finish() }
        sessions.removeAll()
        monitor?.cancel()
    }

    private func run(_ plan: TrainingPlan, text: String, hash: String, from resume: Resume) async {
        do {
            var global = resume.global
            var standardisation = resume.standardisation
            var strategy = try makeStrategy(plan.strategy, byzantine: 0)
            let kind = try ModelKind(parsing: plan.model)
            var participants = resume.participants
            var lastCommitted = resume.lastCommitted
            var prepared: ModelFile?
            for number in stride(from: resume.nextRound, through: plan.rounds, by: 1) {
                try Task.checkCancellation()
                let roundDeadline = ContinuousClock.now + .seconds(plan.roundDeadlineSeconds)
                let eligible = await eligibleSilos(for: plan)
                var progress = RoundProgress(sampled: Set(eligible), quorum: plan.quorum)
                let wallDeadline = Date().addingTimeInterval(Double(plan.roundDeadlineSeconds))
                try await durable { try await self.store.openRound(RoundRecord(planHash: hash, number: number, state: .planned, sampled: eligible, survivors: [],
                                                      deadline: wallDeadline, updatedAt: Date()), actor: settings.brokerID) }
                roundStarted[hash] = .now
                guard eligible.count >= plan.quorum else {
                    try await abort(hash, number, progress, reason: "only \(eligible.count) silos connected serve \(plan.datasets), quorum is \(plan.quorum)")
                    continue
                }
                try await advance(hash, number, .offered, [])
                crashPoint("offered", number)
                active[hash] = ActiveRound(number: number, progress: progress, momentsShape: Self.momentsShape(plan, kind))
                var offer = Fedgate_V1_RoundOffer()
                offer.planHash = hash
                offer.round = UInt32(number)
                offer.planYaml = text
                offer.deadlineMs = Int64(wallDeadline.timeIntervalSince1970 * 1000)
                send(.offer(offer), to: eligible)

                let offerDeadline = min(ContinuousClock.now + settings.offerWindow, ContinuousClock.now + .seconds(plan.roundDeadlineSeconds) / 3)
                await waitForRound(hash, until: offerDeadline)
                try Task.checkCancellation()
                progress = active[hash]!.progress
                guard progress.closeOffer() else {
                    active[hash]!.progress = progress
                    try await abort(hash, number, progress, reason: "\(progress.accepted.count) accepted, quorum is \(plan.quorum)")
                    continue
                }
                if global == nil {
                    // The feature count most accepting silos agree on is the model's; a silo that
                    // sent none or another count is left out of the round, so one silo cannot stop it.
                    let counts = Dictionary(grouping: progress.accepted.compactMap { progress.moments[$0]?.sums.count }, by: { $0 })
                    let agreed = counts.max { ($0.value.count, $1.key) < ($1.value.count, $0.key) }?.key
                    for silo in progress.accepted where progress.moments[silo]?.sums.count != agreed {
                        let reason = progress.moments[silo].map { "its \($0.sums.count) feature sums disagree with the \(agreed ?? 0) of the other silos" }
                            ?? "it accepted without feature moments"
                        try await durable { try await self.store.audit(actor: self.settings.brokerID, action: "reply.reject", subject: silo, payload: canonicalPayload([
                            "plan": hash, "round": number, "reason": reason]), at: Date()) }
                        progress.refuse(silo, reason: reason)
                    }
                    let parts = progress.accepted.sorted().compactMap { progress.moments[$0] }
                    guard progress.accepted.count >= plan.quorum, let first = parts.first else {
                        active[hash]!.progress = progress
                        try await abort(hash, number, progress, reason: "\(progress.accepted.count) accepting silos sent consistent feature moments, quorum is \(plan.quorum)")
                        continue
                    }
                    standardisation = try Standardisation(combining: parts)
                    let classes = max(2, parts.map(\.classes).max() ?? 2)
                    global = try Network(kind: kind, inputs: first.sums.count, classes: classes, seed: settings.modelSeed)
                    plans[hash]?.layerSizes = global!.layerSizes
                }
                // Set in place, not through a local copy of the round: a copy alive at aggregation
                // would share the model file, and so the global model's storage, and make the
                // in-place update below copy 100 MB (measured with heaptrack).
                // The file the last commit checkpointed is this round's model: hashed once, not again.
                let file = try prepared ?? ModelPayload.modelFile(global!, chunkBytes: chunkBytes)
                prepared = nil
                let (modelSHA, modelBytes) = (file.sha256, file.bytes)
                active[hash]!.progress = progress
                active[hash]!.model = consume file
                active[hash]!.dimension = global!.parameters.count
                var setup: Fedgate_V1_SecAggSetup?
                if plan.secureAggregation {
                    do {
                        let made = try secureSetup(plan, hash: hash, number: number, participants: progress.accepted.sorted(),
                                                   dimension: global!.parameters.count)
                        active[hash]!.secagg = SecureRound(setup: made.setup, server: SecureAggregationServer(configuration: made.configuration))
                        setup = made.setup
                    } catch {
                        try await abort(hash, number, progress, reason: "secure aggregation cannot run: \(error)")
                        continue
                    }
                } else if plan.strategy == "fedavg" {
                    active[hash]!.folded = WeightedAverage(dimension: global!.parameters.count)
                }
                try await advance(hash, number, .training, progress.accepted)
                crashPoint("training", number)
                var task = Fedgate_V1_RoundTask()
                task.planHash = hash
                task.round = UInt32(number)
                task.modelSha256 = modelSHA
                task.modelBytes = UInt64(modelBytes)
                task.deadlineMs = offer.deadlineMs
                task.featureMeans = standardisation!.means
                task.featureScales = standardisation!.scales
                task.classes = UInt32(global!.classCount)
                if let setup { task.secagg = setup }
                send(.task(task), to: progress.accepted)
                if setup != nil { crashPoint("advertising", number) }

                var secureMean: [Float]?
                if setup != nil {
                    switch try await secureExchange(hash, until: roundDeadline) {
                    case .failure(let reason):
                        try await abort(hash, number, active[hash]!.progress, reason: reason.description)
                        continue
                    case .success(let mean):
                        secureMean = mean
                    }
                } else {
                    await waitForRound(hash, until: roundDeadline)
                }
                try Task.checkCancellation()
                progress = active[hash]!.progress
                let updates: [ClientUpdate]
                if secureMean != nil {
                    // Training was closed by the secure exchange, before unmasking.
                    updates = progress.updates.keys.sorted().map { progress.updates[$0]! }
                } else if let closed = progress.closeTraining() {
                    updates = closed
                } else {
                    active[hash]!.progress = progress
                    try await abort(hash, number, progress, reason: "\(progress.updates.count) updates by the deadline, quorum is \(plan.quorum)")
                    continue
                }
                active[hash]!.progress = progress
                active[hash]!.model = nil
                let survivors = updates.map(\.silo)
                try await advance(hash, number, .aggregating, survivors)
                crashPoint("aggregating", number)
                let outcome: AggregationOutcome
                if let mean = secureMean {
                    // The unmasked sum's mean (each silo counted once): the broker never saw an update.
                    plans[hash]?.parameters = []
                    VectorMath.axpy(1, mean, &global!.parameters)
                    outcome = AggregationOutcome(parameters: global!.parameters, rejected: [])
                } else if let folded = active[hash]!.folded {
                    // FedAvg, folded as the updates arrived: the global model plus their weighted mean,
                    // added in place (the status's copy is let go first so nothing model-sized is copied).
                    active[hash]!.folded = nil
                    plans[hash]?.parameters = []
                    if folded.count > 0 { VectorMath.axpy(1, folded.takeMean(), &global!.parameters) }
                    outcome = AggregationOutcome(parameters: global!.parameters, rejected: active[hash]!.rejected)
                } else {
                    var validated = Validated(strategy, validator: UpdateValidator(dimension: global!.parameters.count,
                                                                                   maximumNorm: settings.maximumUpdateNorm))
                    outcome = try validated.aggregate(global: global!.parameters, updates: updates)
                    strategy = validated.inner
                }
                for r in outcome.rejected {
                    metrics.count("fedgate_updates_rejected_total", [("reason", r.check.rawValue)])
                    try await durable { try await self.store.audit(actor: settings.brokerID, action: "update.reject", subject: r.silo,
                                          payload: canonicalPayload(["plan": hash, "round": number, "reason": r.description]), at: Date()) }
                }
                global!.parameters = outcome.parameters
                plans[hash]?.parameters = outcome.parameters
                try await advance(hash, number, .evaluating, survivors)
                crashPoint("evaluating", number)
                let reported = weightedAccuracy(progress)
                // The round commits with the checkpoint a restarted broker (or the standby) resumes from.
                let next = try ModelPayload.modelFile(global!, chunkBytes: chunkBytes)
                let checkpoint = PlanRun.Checkpoint(round: number, contentSHA256: next.sha256,
                                                    standardisation: try Resume.encode(standardisation!, classes: global!.classCount))
                try await durable { try await self.store.commitRound(planHash: hash, number: number, survivors: survivors, checkpoint: checkpoint,
                                                                     content: next.contents, fence: fence, at: Date(), actor: settings.brokerID) }
                prepared = next
                crashPoint("committed", number)
                roundEnded(hash, "committed", participants: survivors.count)
                active.removeValue(forKey: hash)
                plans[hash]?.rounds.append(.init(number: number, state: "committed", participants: survivors, refused: progress.refused,
                                                 reportedAccuracy: reported, reason: nil))
                updateMirror(hash, for: survivors)
                sendOutcome(hash, number, "committed", survivors, "", to: progress.sampled.sorted())
                logger.info("round committed", metadata: ["plan": "\(hash.prefix(12))", "round": "\(number)", "participants": "\(survivors)"])
                participants.formUnion(survivors)
                lastCommitted = number
            }
            if let round = lastCommitted, let model = global, let standardisation {
                // Resumed with no round left to run: the participants are reconnecting to this broker.
                let resumed = resume.nextRound > plan.rounds
                try await evaluateFinal(plan, hash: hash, round: round, model: model, file: prepared, standardisation: standardisation,
                                        participants: participants, resumed: resumed)
            }
            try await durable { try await self.store.finishPlanRun(planHash: hash, state: .finished, reason: nil, fence: fence, at: Date(), actor: settings.brokerID) }
            plans[hash]?.state = .finished
        } catch {
            // A cancelled run may surface as the store's own error for the call it interrupted.
            if error is CancellationError || Task.isCancelled {
                evaluations.removeValue(forKey: hash)
                // The run is cancelled, so its own store calls would be too: settle from a fresh task.
                // A broker shutting down leaves the plan running in the store, for the next start.
                let round = active[hash].map { ($0.number, $0.progress) }
                let stopping = stopping
                if !stopping { plans[hash]?.state = .cancelled }
                _ = await Task {
                    if let (number, progress) = round {
                        try? await self.abort(hash, number, progress, reason: stopping ? "the broker stopped" : "the plan was cancelled")
                    }
                    if !stopping {
                        await self.recordEnd(hash, .cancelled, reason: "cancelled")
                    }
                }.value
            } else {
                plans[hash]?.state = .failed
                plans[hash]?.reason = "\(error)"
                logger.error("plan failed", metadata: ["plan": "\(hash.prefix(12))", "error": "\(error)"])
                _ = await Task { [reason = "\(error)"] in
                    await self.recordEnd(hash, .failed, reason: reason)
                }.value
            }
        }
        active.removeValue(forKey: hash)
        runs.removeValue(forKey: hash)
    }

    /// The feature moments a plan's silos can send: one sum per column the plan reads (the silo's
    /// label among them or not), and the classes the model kind can have.
    private static func momentsShape(_ plan: TrainingPlan, _ kind: ModelKind) -> (features: ClosedRange<Int>, classes: ClosedRange<Int>) {
        let columns = plan.columns.count
        return (max(1, columns - 1)...max(1, columns), 1...(kind == .logistic ? 2 : Network.maximumClasses))
    }

    /// Sends the final model to every silo that took part, waits for their evaluations (at most a
    /// round's deadline), applies the plan's gate and, if it passes, records a registry version with
    /// its lineage and file. The gate's decision is audited either way.
    /// `file`: the model's file when the last commit already made it (it is the checkpoint's).
    private func evaluateFinal(_ plan: TrainingPlan, hash: String, round: Int, model: Network, file prepared: ModelFile?, standardisation: Standardisation,
                               participants: Set<String>, resumed: Bool) async throws {
        let file = try prepared ?? ModelPayload.modelFile(model, chunkBytes: chunkBytes)
        // Right after a restart the participants are still reconnecting: give them the connect wait.
        let until = ContinuousClock.now + (resumed ? settings.connectWait : .zero)
        while !participants.allSatisfy({ sessions[$0] != nil }), ContinuousClock.now < until, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let asked = participants.filter { sessions[$0] != nil }.sorted()
        evaluations[hash] = FinalEvaluation(round: round, model: file, expected: Set(asked))
        var task = Fedgate_V1_EvaluateTask()
        task.planHash = hash
        task.round = UInt32(round)
        task.modelSha256 = file.sha256
        task.modelBytes = UInt64(file.bytes)
        task.deadlineMs = Int64(Date().addingTimeInterval(Double(plan.roundDeadlineSeconds)).timeIntervalSince1970 * 1000)
        task.featureMeans = standardisation.means
        task.featureScales = standardisation.scales
        task.classes = UInt32(model.classCount)
        send(.evaluate(task), to: asked)
        crashPoint("final-evaluation", round)
        await waitForRound(hash, until: .now + .seconds(plan.roundDeadlineSeconds))
        try Task.checkCancellation()
        let reports = evaluations.removeValue(forKey: hash)?.reports ?? [:]
        var silos: [SiloEvaluation] = [], failures: [String: String] = [:]
        for (silo, r) in reports {
            if r.error.isEmpty {
                silos.append(SiloEvaluation(silo: silo, accuracy: r.accuracy, examples: Int(r.examples), epsilonSpent: r.epsilonSpent, epsilonCap: r.epsilonCap,
                                            personalisedAccuracy: r.personalised ? r.personalisedAccuracy : nil))
            } else {
                failures[silo] = r.error
            }
        }
        for silo in asked where reports[silo] == nil { failures[silo] = "no evaluation by the deadline" }
        let summary = EvaluationSummary(silos)
        let versions = try await durable { try await self.store.modelVersions() }
        let gate = ModelGate.decide(summary, minAccuracy: plan.minAccuracy, maxDrop: plan.maxAccuracyDrop,
                                    currentAccuracy: versions.last?.metrics["accuracy"])
        var perSilo: [String: Any] = [:]
        for s in summary.silos {
            let personalised: Any = s.personalisedAccuracy.map { $0 as Any } ?? NSNull()
            perSilo[s.silo] = ["accuracy": s.accuracy, "examples": s.examples, "epsilon": s.epsilonSpent, "epsilon_cap": s.epsilonCap,
                               "personalised_accuracy": personalised] as [String: Any]
        }
        try await durable { try await self.store.audit(actor: settings.brokerID, action: "model.gate", subject: hash, payload: canonicalPayload([
            "round": round, "passed": gate.passed, "reasons": gate.reasons, "accuracy": summary.pooledAccuracy ?? NSNull(),
            "fairness_delta": summary.fairnessDelta ?? NSNull(), "silos": perSilo, "failures": failures,
            "min_accuracy": plan.minAccuracy ?? NSNull(), "max_drop": plan.maxAccuracyDrop ?? NSNull()]), at: Date()) }
        plans[hash]?.evaluation = summary
        plans[hash]?.gate = gate
        guard gate.passed, let accuracy = summary.pooledAccuracy else {
            logger.notice("final model held back by the gate", metadata: ["plan": "\(hash.prefix(12))", "reasons": "\(gate.reasons)"])
            return
        }
        var metrics = ["accuracy": accuracy, "fairness_delta": summary.fairnessDelta ?? 0]
        for s in summary.silos { metrics["accuracy.\(s.silo)"] = s.accuracy }
        let version = try await durable { try await self.store.addModelVersion(
            ModelVersion(version: 0, planHash: hash, round: round, contentSHA256: file.sha256, participants: participants.sorted(),
                         epsilonPerSilo: Dictionary(uniqueKeysWithValues: summary.silos.map { ($0.silo, $0.epsilonSpent) }),
                         metrics: metrics, parent: versions.last?.version, createdAt: Date()),
            content: file.contents, actor: settings.brokerID) }
        plans[hash]?.modelVersion = version
        logger.info("model version recorded", metadata: ["plan": "\(hash.prefix(12))", "version": "\(version)", "accuracy": "\(accuracy)"])
    }

    struct SecureAbort: Error, CustomStringConvertible { let description: String }

    /// The protocol's parameters for a round: its id (from the plan and round), the participants,
    /// a threshold above half of them, and the encoding and distributed noise every silo applies.
    private func secureSetup(_ plan: TrainingPlan, hash: String, number: Int, participants: [String], dimension: Int) throws
        -> (setup: Fedgate_V1_SecAggSetup, configuration: SecureAggregationConfiguration) {
        let digest = Array(SHA256.hash(data: Data("fedgate-secagg-round/\(hash)/\(number)".utf8)))
        let id = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let threshold = max(2, participants.count / 2 + 1)
        let configuration = try SecureAggregationConfiguration(round: id, participants: participants, threshold: threshold, dimension: dimension)
        var setup = Fedgate_V1_SecAggSetup()
        setup.id = id
        setup.participants = participants
        setup.threshold = UInt32(threshold)
        setup.clipNorm = plan.dp.clipNorm
        setup.noiseMultiplier = plan.dp.distributedNoiseMultiplier ?? 1.0
        setup.honestSilos = UInt32(threshold)
        _ = try DistributedNoise(clipNorm: setup.clipNorm, silos: participants.count, honestSilos: threshold, noiseMultiplier: setup.noiseMultiplier)
        return (setup, configuration)
    }

    /// Runs the secure-aggregation exchange of a round whose task was sent: keys, shares, masked
    /// inputs (uploads), unmasking. The mean of the survivors' updates, or why the round cannot go on.
    private func secureExchange(_ hash: String, until deadline: ContinuousClock.Instant) async throws -> Result<[Float], SecureAbort> {
        func step(_ name: String, _ body: Data) -> Fedgate_V1_BrokerMessage.OneOf_Kind {
            var s = Fedgate_V1_SecAggStep()
            s.planHash = hash
            s.round = UInt32(active[hash]!.number)
            s.step = name
            s.body = body
            return .secagg(s)
        }
        do {
            // Keys: each silo gets its neighbours' advertisements and every participant's binding.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            var sa = active[hash]!.secagg!
            let bindings = sa.bindings.values.sorted { $0.silo < $1.silo }
            for silo in sa.bindings.keys.sorted() where sa.alive.contains(silo) {
                send(step("keys", try SecAggJSON.encode(SecAggKeys(advertisements: try sa.server.advertisements(for: silo), bindings: bindings))), to: [silo])
            }
            active[hash]!.secagg!.phase = .sharing
            crashPoint("sharing", active[hash]!.number)
            // Shares: relayed to each silo that shared.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            sa = active[hash]!.secagg!
            for silo in sa.shared.sorted() where sa.alive.contains(silo) {
                let relay = try sa.server.shares(for: silo)
                send(step("relay", try SecAggJSON.encode(SecAggRelay(shares: relay.shares, sharers: relay.sharers))), to: [silo])
            }
            active[hash]!.secagg!.phase = .masking
            crashPoint("masking", active[hash]!.number)
            // Masked inputs arrive as uploads; then unmasking by the survivors.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            var progress = active[hash]!.progress
            guard progress.closeTraining() != nil else {
                active[hash]!.progress = progress
                return .failure(SecureAbort(description: "\(progress.updates.count) masked inputs by the deadline, quorum is \(progress.quorum)"))
            }
            active[hash]!.progress = progress
            let request = try active[hash]!.secagg!.server.unmaskingRequest()
            active[hash]!.secagg!.request = request
            active[hash]!.secagg!.phase = .unmasking
            send(step("unmask", try SecAggJSON.encode(request)), to: request.survivors.filter { active[hash]!.secagg!.alive.contains($0) })
            crashPoint("unmasking", active[hash]!.number)
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            sa = active[hash]!.secagg!
            let (sum, survivors) = try sa.server.unmask(Array(sa.responses.values))
            let noise = try DistributedNoise(clipNorm: sa.setup.clipNorm, silos: sa.setup.participants.count,
                                             honestSilos: Int(sa.setup.honestSilos), noiseMultiplier: sa.setup.noiseMultiplier)
            var mean = noise.codec.decode(sum)
            VectorMath.scale(&mean, by: 1 / Float(survivors.count))
            logger.info("masked sum unmasked", metadata: ["plan": "\(hash.prefix(12))", "survivors": "\(survivors)"])
            return .success(mean)
        } catch let error as SecureAggregationError {
            return .failure(SecureAbort(description: "secure aggregation: \(error)"))
        }
    }

    private func weightedAccuracy(_ progress: RoundProgress) -> Double? {
        var sum = 0.0, weight = 0.0
        for (_, m) in progress.metrics {
            if let a = m["accuracy"], let n = m["eval_examples"], n > 0 { sum += a * n; weight += n }
        }
        return weight > 0 ? sum / weight : nil
    }

    private func abort(_ hash: String, _ number: Int, _ progress: RoundProgress, reason: String) async throws {
        try await durable { try await self.store.advanceRound(planHash: hash, number: number, to: .aborted, survivors: [], at: Date(), actor: settings.brokerID) }
        try await durable { try await self.store.audit(actor: settings.brokerID, action: "round.abort", subject: hash,
                              payload: canonicalPayload(["round": number, "reason": reason]), at: Date()) }
        active.removeValue(forKey: hash)
        roundEnded(hash, "aborted", participants: 0)
        plans[hash]?.rounds.append(.init(number: number, state: "aborted", participants: [], refused: progress.refused,
                                         reportedAccuracy: nil, reason: reason))
        sendOutcome(hash, number, "aborted", [], reason, to: progress.sampled.sorted())
        logger.warning("round aborted", metadata: ["plan": "\(hash.prefix(12))", "round": "\(number)", "reason": "\(reason)"])
    }

    /// Runs a store call of a plan's run, waiting out a database that cannot be reached (restarting,
    /// connection lost) for up to `storePatience`, so a PostgreSQL restart delays a round instead of
    /// failing its plan. Other errors pass at once.
    private func durable<T>(_ body: () async throws -> T) async throws -> T {
        let until = ContinuousClock.now + settings.storePatience
        var delay = Duration.milliseconds(100)
        while true {
            do { return try await body() } catch LedgerError.unavailable(let reason) where ContinuousClock.now < until {
                logger.warning("the store cannot be reached; retrying", metadata: ["reason": "\(reason)", "in": "\(delay)"])
                metrics.count("fedgate_store_retries_total")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    private func advance(_ hash: String, _ number: Int, _ state: RoundRecord.State, _ survivors: [String]) async throws {
        try await durable { try await self.store.advanceRound(planHash: hash, number: number, to: state, survivors: survivors, at: Date(), actor: settings.brokerID) }
    }

    private func eligibleSilos(for plan: TrainingPlan) async -> [String] {
        let needed = Set(plan.datasets)
        func serving() -> [String] { sessions.filter { needed.isSubset(of: $0.value.datasets) }.keys.sorted() }
        let until = ContinuousClock.now + settings.connectWait
        while serving().count < plan.quorum, ContinuousClock.now < until, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return serving()
    }

    func send(_ kind: Fedgate_V1_BrokerMessage.OneOf_Kind, to silos: [String]) {
        var message = Fedgate_V1_BrokerMessage()
        message.kind = kind
        for silo in silos { sessions[silo]?.outbox.yield(message) }
    }

    private func sendOutcome(_ hash: String, _ number: Int, _ state: String, _ participants: [String], _ reason: String, to silos: [String]) {
        var outcome = Fedgate_V1_RoundOutcome()
        outcome.planHash = hash
        outcome.round = UInt32(number)
        outcome.state = state
        outcome.participants = participants
        outcome.reason = reason
        send(.outcome(outcome), to: silos)
        sendAuditHead(to: silos)
    }

    // MARK: Waiting for a round's silos

    private func waitForRound(_ hash: String, until deadline: ContinuousClock.Instant) async {
        if roundIsDone(hash) { return }
        nextWaiter += 1
        let id = nextWaiter
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            // The deadline wakes this wait only: a timer cancelled because its wait ended early must
            // not wake the next wait on the same plan (it did: a secure round's phases skipped ahead).
            let timer = Task { [weak self] in
                guard (try? await Task.sleep(until: deadline)) != nil else { return }
                await self?.wakeAtDeadline(hash, id)
            }
            waiters[hash] = Waiter(id: id, continuation: c, timer: timer)
        }
    }

    private func roundIsDone(_ hash: String) -> Bool {
        if let e = evaluations[hash] { return e.reports.count == e.expected.count }
        guard let r = active[hash] else { return true }
        if let sa = r.secagg {
            let alive = sa.alive
            switch sa.phase {
            case .advertising: return alive.isSubset(of: Set(sa.bindings.keys))
            case .sharing: return alive.intersection(sa.bindings.keys).isSubset(of: sa.shared)
            case .masking: return r.progress.everyoneUploaded
            case .unmasking: return alive.intersection(sa.request?.survivors ?? []).isSubset(of: Set(sa.responses.keys))
            }
        }
        switch r.progress.phase {
        case .offering: return r.progress.everyoneAnswered
        case .training: return r.progress.everyoneUploaded
        case .closed: return true
        }
    }

    private func wakeIfDone(_ hash: String) { if roundIsDone(hash) { wake(hash) } }

    private func wake(_ hash: String) {
        guard let w = waiters.removeValue(forKey: hash) else { return }
        w.timer.cancel()
        w.continuation.resume()
    }

    private func wakeAtDeadline(_ hash: String, _ id: UInt64) {
        if waiters[hash]?.id == id { wake(hash) }
    }

    private func startMonitorIfNeeded() {
        guard monitor == nil else { return }
        monitor = Task { [weak self, interval = settings.heartbeatInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await self?.closeSilentGateways()
            }
        }
    }

    private func closeSilentGateways() {
        let now = ContinuousClock.now
        for (silo, s) in sessions where now - s.lastSeen > settings.silentAfter {
            logger.warning("gateway silent; closing its stream", metadata: ["silo": "\(silo)"])
            close(silo: silo, token: s.token)
        }
    }
}

/// A plan this broker cannot run as written (refused at submission, before any silo is asked).
public struct PlanUnsupported: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// Why the broker refused an upload: the metric label (`fedgate_updates_rejected_total{reason}`)
/// and the text the silo and the audit record get.
struct UpdateRefused: Error, CustomStringConvertible {
    enum Reason: String {
        case roundClosed = "round_closed", notParticipant = "not_participant", duplicate, shape, unreadable
        case nonFinite = "non_finite", norm, examples
    }
    let reason: Reason
    let description: String
    init(_ reason: Reason, _ description: String) {
        self.reason = reason
        self.description = description
    }

    /// A failed validation check, as the silo and the audit record see it.
    init(_ rejection: UpdateRejection) {
        let reason: Reason = switch rejection.check {
        case .shape: .shape
        case .nonFinite: .nonFinite
        case .norm: .norm
        case .examples: .examples
        case .duplicate: .duplicate
        }
        self.init(reason, rejection.description)
    }
}

/// The metrics a silo sends with its update (its held-out accuracy and row count, its training
/// loss, what its own program reported): finite values only, known ones within their range, at
/// most 16 short lower-case names, so a peer cannot put NaN or unbounded text into a report.
enum UploadMetrics {
    static let ranges: [String: ClosedRange<Double>] = ["accuracy": 0...1, "eval_examples": 0...Double(1 << 40)]

    static func checked(_ metrics: [String: Double]) -> [String: Double] {
        let kept = metrics.filter { name, value in
            guard value.isFinite, (1...32).contains(name.utf8.count),
                  name.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }) else { return false }
            return ranges[name]?.contains(value) ?? true
        }
        return Dictionary(uniqueKeysWithValues: kept.sorted { $0.key < $1.key }.prefix(16).map { ($0.key, $0.value) })
    }
}
