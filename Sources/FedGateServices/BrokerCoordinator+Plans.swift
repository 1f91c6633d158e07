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

/// Plans: submitted, cancelled, resumed after a restart, finished; the ε mirror of each silo.
extension BrokerCoordinator {
    /// Starts running `plan`'s rounds; returns its hash. Submitting a running plan again is refused.
    public func submit(_ plan: TrainingPlan, text: String, by submitter: String) async throws -> String {
        let hash = plan.contentHash
        if let p = plans[hash], p.state == .running { throw BrokerError.planAlreadyRunning(plan: hash) }
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
        guard !plan.secureAggregation || plan.strategy.isFedAvg else {
            throw PlanUnsupported("secure_aggregation: only with strategy fedavg (\(plan.strategy) needs every update in the clear)")
        }
        let now = Date()
        try await store.startPlanRun(PlanRun(planHash: hash, planYAML: text, submitter: submitter, state: .running, submittedAt: now, updatedAt: now),
                                     submission: .init(purpose: plan.purpose, rounds: plan.rounds, strategy: plan.strategy.description,
                                                       datasets: plan.datasets, columns: plan.columns, quorum: plan.quorum,
                                                       secureAggregation: plan.secureAggregation, dp: Self.dpLine(plan)),
                                     actor: submitter)
        plans[hash] = PlanStatus(state: .running)
        mirrorPlans[hash] = Self.mirrorPlan(plan)
        runs[hash] = Task { await self.run(plan, text: text, hash: hash, from: .start) }
        logger.info("plan submitted", metadata: ["plan": "\(hash.prefix(12))", "by": "\(submitter)", "rounds": "\(plan.rounds)"])
        return hash
    }

    /// The plan's DP settings as the compliance report shows them.
    static func dpLine(_ plan: TrainingPlan) -> String {
        let dp = plan.dp
        let noise = dp.noiseMultiplier.map { "noise multiplier \($0)" } ?? dp.targetEpsilon.map { "target ε \($0)" } ?? ""
        return "DP-SGD: \(noise), clipping norm \(dp.clipNorm), sampling rate \(dp.samplingRate), δ \(dp.delta), \(plan.localSteps) steps per round"
            + (dp.distributedNoiseMultiplier.map { "; distributed noise multiplier \($0)" } ?? "")
    }

    /// Stops a running plan: the round in flight is aborted (its silos release their reservations).
    public func cancel(_ hash: String, by person: String) async throws -> PlanStatus {
        guard let status = plans[hash] else { throw BrokerError.unknownPlan(plan: hash) }
        guard status.state == .running, let run = runs[hash] else { return status }
        try await store.audit(.planCancelled(.init(state: status.state.rawValue)), actor: person, subject: hash, at: Date())
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
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: try encoder.encode(StandardisationCheckpoint(s, classes: classes)), as: UTF8.self)
        }

        /// The checkpoint's model and standardisation, checked against the plan's model kind.
        static func checkpoint(_ c: PlanRun.Checkpoint, of plan: String, content: [UInt8], kind: ModelKind) throws -> (Network, Standardisation) {
            guard let saved = try? JSONDecoder().decode(StandardisationCheckpoint.self, from: Data(c.standardisation.utf8)) else {
                throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "has no readable standardisation")
            }
            if let problem = saved.problem { throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "standardisation \(problem)") }
            let dimension = try Network.parameterCount(kind: kind, inputs: saved.means.count, classes: saved.classes)
            let parameters: [Float]
            do { parameters = try ModelPayload.modelParameters(content, dimension: dimension) } catch {
                throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "is not this plan's model: \(error)")
            }
            let network = try Network(kind: kind, inputs: saved.means.count, classes: saved.classes, parameters: parameters)
            return (network, saved.standardisation)
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
            let stored = try await store.rounds(planHash: hash)
            let recovery = RunRecovery(rounds: stored.map { .init(number: $0.number, stage: RoundStage($0.state), survivors: $0.survivors) })
            for round in recovery.abandoned {
                try await store.advanceRound(planHash: hash, number: round.number, to: .aborted, survivors: [], at: Date(), actor: settings.brokerID)
                try await store.audit(.roundAbandoned(.init(round: round.number, reason: round.reason)), actor: settings.brokerID, subject: hash, at: Date())
            }
            for record in stored {
                let reason = recovery.abandoned.first { $0.number == record.number }?.reason
                let state = reason == nil ? record.state : .aborted
                status.rounds.append(.init(number: record.number, state: state.rawValue, participants: state == .committed ? record.survivors : [],
                                           refused: [:], reportedAccuracy: nil, reason: reason))
            }
            resume.participants = recovery.participants
            resume.nextRound = recovery.nextRound
            if let c = run.checkpoint {
                guard let content = try await store.modelContent(sha256: c.contentSHA256) else {
                    throw BrokerError.checkpointUnusable(plan: hash, round: c.round, problem: "is missing from the store")
                }
                (resume.global, resume.standardisation) = try Resume.checkpoint(c, of: hash, content: content, kind: try ModelKind(parsing: plan.model))
                resume.lastCommitted = c.round
                status.parameters = resume.global!.parameters
                status.layerSizes = resume.global!.layerSizes
            }
            plans[hash] = status
            mirrorPlans[hash] = Self.mirrorPlan(plan)
            updateMirror(hash, for: Array(resume.participants))
            try await store.audit(.planResumed(.init(nextRound: resume.nextRound, checkpointRound: resume.lastCommitted)), actor: settings.brokerID,
                                  subject: hash, at: Date())
            logger.notice("plan resumed from the store", metadata: ["plan": "\(hash.prefix(12))", "next round": "\(resume.nextRound)",
                                                                    "checkpoint": "\(resume.lastCommitted.map(String.init) ?? "none")"])
            runs[hash] = Task { [resume] in await self.run(plan, text: run.planYAML, hash: hash, from: resume) }
            resumed.append(hash)
        }
        return resumed
    }

    /// The ε mirror of `silos` after a committed round (`TrainingPlan.event(rounds:)`), one
    /// accountant call per distinct count.
    func updateMirror(_ hash: String, for silos: [String]) {
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
    func recordEnd(_ hash: String, _ state: PlanRun.State, reason: String) async {
        do { try await store.finishPlanRun(planHash: hash, state: state, reason: reason, fence: fence, at: Date(), actor: settings.brokerID) } catch {
            logger.error("could not record the plan's end", metadata: ["plan": "\(hash.prefix(12))", "state": "\(state.rawValue)", "error": "\(error)"])
        }
    }

    func roundEnded(_ hash: String, _ outcome: String, participants: Int) {
        metrics.count("fedgate_rounds_total", [("outcome", outcome)])
        if outcome == "committed" { metrics.set("fedgate_round_participants", Double(participants)) }
        if let started = roundStarted.removeValue(forKey: hash) {
            metrics.time("fedgate_round_duration_seconds", [("outcome", outcome)], ContinuousClock.now - started)
        }
    }

    /// A test's crash point (`Settings.crashPoints`), right after the round reached `phase`.
    func crashPoint(_ phase: String, _ round: Int) {
        settings.crashPoints.reach(phase, round: round, logger: logger)
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
        gateways.closeAll()
        monitor?.cancel()
    }
}
