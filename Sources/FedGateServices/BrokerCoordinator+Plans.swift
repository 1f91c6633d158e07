import Crypto
import FedGateAggregation
import FedGateData
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
        if plan.isStatistics {
            do { _ = try plan.analyticsRelease(features: plan.analyticsInputs) } catch { throw PlanUnsupported("\(error)") }
        } else if plan.isEvaluation {
            _ = try ModelKind(parsing: plan.model)
            _ = try await registryModel(plan)
        } else {
            _ = try ModelKind(parsing: plan.model)
            try Self.checkTraining(plan)
        }
        let submitted = now()
        try await store.startPlanRun(PlanRun(planHash: hash, planYAML: text, submitter: submitter, state: .running, submittedAt: submitted, updatedAt: submitted),
                                     submission: .init(purpose: plan.purpose, rounds: plan.rounds, strategy: plan.isStatistics ? "statistics" : plan.evaluates.map { "evaluate version \($0)" } ?? plan.strategy.description,
                                                       datasets: plan.datasets, columns: plan.columns, quorum: plan.quorum,
                                                       secureAggregation: plan.secureAggregation, dp: Self.dpLine(plan)),
                                     actor: submitter)
        plans[hash] = PlanStatus(state: .running)
        mirrorPlans[hash] = Self.mirrorPlan(plan)
        attackWatches[hash] = nil
        runs[hash] = Task { await self.run(plan, text: text, hash: hash, from: .start) }
        logger.info("plan submitted", metadata: ["plan": "\(hash.prefix(12))", "by": "\(submitter)", "rounds": "\(plan.rounds)"])
        return hash
    }

    /// What a training plan must be for this broker to run it (refused at submission, with the field to change).
    static func checkTraining(_ plan: TrainingPlan) throws {
        if let local = plan.localLayers, !local.isEmpty {
            let layers = Network.layerCount(try ModelKind(parsing: plan.model))
            guard local.allSatisfy({ $0 < layers }), Set(local).count < layers else {
                throw PlanUnsupported("personalisation.local_layers: \(plan.model) has layers 0…\(layers - 1); name some of them, not all "
                                      + "(at least one layer must be shared)")
            }
        }
        if let schema = plan.schema { try checkTrainable(schema, model: try ModelKind(parsing: plan.model)) }
        if plan.schema == nil, try ModelKind(parsing: plan.model) == .linear {
            throw PlanUnsupported("model: linear needs a numeric target, which a plan states in its schema (schema.target: { column: …, regression: true, bounds: […] })")
        }
        if let problem = plan.statisticsProblem { throw PlanUnsupported(problem) }
        // Secure aggregation needs the mean of equal weights and FedAvg's sum: robust strategies
        // need every update in the clear, which secure aggregation exists to prevent.
        guard !plan.secureAggregation || plan.strategy.isFedAvg else {
            throw PlanUnsupported("secure_aggregation: only with strategy fedavg (\(plan.strategy) needs every update in the clear)")
        }
    }

    /// What this FedGate can train from a schema: classification (two classes for logistic
    /// regression), with rows dropped for missing cells (the consortium's fill values are not computed yet).
    static func checkTrainable(_ schema: DataSchema, model: ModelKind) throws {
        guard let classes = schema.target.task.classCount else {
            guard model == .linear else {
                throw PlanUnsupported("model: the schema's target '\(schema.target.column)' is a number (regression: true); train it with model: linear")
            }
            if let column = schema.columns.first(where: { $0.missing != .drop }) {
                throw PlanUnsupported("schema.columns.\(column.name).missing: \(column.missing.rawValue) needs the consortium's fill values, "
                                      + "which this FedGate does not compute yet; use missing: drop")
            }
            return
        }
        if model == .linear {
            throw PlanUnsupported("model: linear predicts a number; the schema's target '\(schema.target.column)' has \(classes) classes (use logistic, softmax or mlp)")
        }
        if model == .logistic, classes != 2 {
            throw PlanUnsupported("model: logistic predicts two classes; the schema's target '\(schema.target.column)' has \(classes) (use softmax or mlp)")
        }
        if let column = schema.columns.first(where: { $0.missing != .drop }) {
            throw PlanUnsupported("schema.columns.\(column.name).missing: \(column.missing.rawValue) needs the consortium's fill values, "
                                  + "which this FedGate does not compute yet; use missing: drop")
        }
    }

    /// The plan's DP settings as the compliance report shows them.
    static func dpLine(_ plan: TrainingPlan) -> String {
        if let z = plan.isStatistics ? plan.statistics?.noiseMultiplier : nil {
            return "statistics: one Gaussian release per silo at noise multiplier \(z) (counts, sums, squares, histogram bins); no DP-SGD"
        }
        if let version = plan.evaluates {
            return "evaluates registry version \(version): no DP-SGD; each silo's result leaves as its policy's releases say (exactly, or as noisy counts)"
        }
        let dp = plan.dp
        let noise = dp.noiseMultiplier.map { "noise multiplier \($0)" } ?? dp.targetEpsilon.map { "target ε \($0)" } ?? ""
        return "DP-SGD: \(noise), clipping norm \(dp.clipNorm), sampling rate \(dp.samplingRate), δ \(dp.delta), \(plan.localSteps) steps per round"
            + (dp.distributedNoiseMultiplier.map { "; distributed noise multiplier \($0)" } ?? "")
    }

    /// Stops a running plan: the round in flight is aborted (its silos release their reservations).
    public func cancel(_ hash: String, by person: String) async throws -> PlanStatus {
        guard let status = plans[hash] else { throw BrokerError.unknownPlan(plan: hash) }
        guard status.state == .running, let run = runs[hash] else { return status }
        try await store.audit(.planCancelled(.init(state: status.state.rawValue)), actor: person, subject: hash, at: now())
        run.cancel()
        wake(hash)
        await run.value
        return plans[hash] ?? status
    }

    /// Picks up the plans the store says are running (after a restart, or on taking the lead from
    /// another broker; `PlanRecovery` reads each back) and goes on with each from its last committed
    /// round's checkpoint. Returns the plans resumed.
    @discardableResult
    public func recover(fence: LeaseFence? = nil) async throws -> [String] {
        self.fence = fence
        replayRollout(try await store.auditRecords())
        let recovery = PlanRecovery(store: store, brokerID: settings.brokerID, wallClock: settings.wallClock, fence: fence)
        var resumed: [String] = []
        var trail: [AuditRecord]?
        for run in try await store.planRuns() where run.state == .running && plans[run.planHash]?.state != .running {
            guard let found = try await recovery.recover(run) else { continue }
            let hash = run.planHash
            plans[hash] = found.status
            if trail == nil { trail = try await store.auditRecords() }
            let flags = Self.attackWatch(hash, since: run.submittedAt, alertAfter: settings.attackAlertRounds, records: trail!)
            (attackWatches[hash], plans[hash]!.alerts) = (flags.watch, flags.alerts)
            mirrorPlans[hash] = Self.mirrorPlan(found.plan)
            updateMirror(hash, for: Array(found.resume.participants))
            logger.notice("plan resumed from the store", metadata: ["plan": "\(hash.prefix(12))", "next round": "\(found.resume.nextRound)",
                                                                    "checkpoint": "\(found.resume.lastCommitted.map(String.init) ?? "none")"])
            runs[hash] = Task { [found] in await self.run(found.plan, text: run.planYAML, hash: hash, from: found.resume) }
            resumed.append(hash)
        }
        return resumed
    }

    /// The ε mirror of `silos` after a committed round (`TrainingPlan.spent(rounds:)`: the
    /// statistics release and the rounds it took part in), one
    /// accountant call per distinct count.
    func updateMirror(_ hash: String, for silos: [String]) {
        guard let m = mirrorPlans[hash] else { return }
        var byCount: [Int: Double] = [:]
        for silo in silos {
            let rounds = plans[hash]?.rounds.filter { $0.state == "committed" && $0.participants.contains(silo) }.count ?? 0
            if byCount[rounds] == nil {
                byCount[rounds] = try? epsilon(of: try m.spent(rounds: rounds), delta: m.dp.delta)
            }
            plans[hash]?.epsilonMirror[silo] = byCount[rounds]
            if let e = byCount[rounds] { metrics.set("fedgate_epsilon_mirror", [("silo", silo)], e) }
        }
    }

    /// Records how a plan ended; a refusal (a lease taken by another broker, a store gone) is logged,
    /// since the run is over either way.
    func recordEnd(_ hash: String, _ state: PlanRun.State, reason: String) async {
        do { try await store.finishPlanRun(planHash: hash, state: state, reason: reason, fence: fence, at: now(), actor: settings.brokerID) } catch {
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

    /// Tells the silos serving the plan's data sets that it ended (a broker stopping leaves its plans
    /// running for the next one, and says nothing). A silo counts the plans it is in by this.
    func announceEnd(_ plan: TrainingPlan, hash: String) {
        guard !stopping, let state = plans[hash]?.state, state != .running else { return }
        var ended = Fedgate_V1_PlanEnded()
        (ended.planHash, ended.state) = (hash, state.rawValue)
        send(.planEnded(ended), to: gateways.serving(Set(plan.datasets)))
    }
}
