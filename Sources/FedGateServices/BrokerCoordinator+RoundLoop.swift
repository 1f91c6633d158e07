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

/// A plan's rounds, one after another: each transition written to the store before it takes effect.
/// A round goes planned → offered → training → aggregating → evaluating → committed, or to aborted
/// from any of them; each step below is one of those transitions, and the round's pure state
/// (`RoundProgress`, `SecureRoundState`) decides whether it can go on.
extension BrokerCoordinator {
    /// What a plan's run carries from one round to the next.
    struct PlanRunState {
        var global: Network?
        var standardisation: Standardisation?
        var strategy: AnyAggregationStrategy
        var participants: Set<String>
        var lastCommitted: Int?
        /// The file the last commit checkpointed: the next round's model, hashed once, not again.
        var prepared: ModelFile?
    }

    /// One round's fixed facts.
    struct RoundContext {
        let plan: TrainingPlan
        let text: String
        let hash: String
        let number: Int
        let kind: ModelKind
        /// The silos connected for the plan's data sets when the round was planned.
        let eligible: [String]
        let deadline: ContinuousClock.Instant
        let wallDeadline: Date
    }

    func run(_ plan: TrainingPlan, text: String, hash: String, from resume: Resume) async {
        do {
            let kind = try ModelKind(parsing: plan.model)
            var state = PlanRunState(global: resume.global, standardisation: resume.standardisation, strategy: try plan.strategy.make(),
                                     participants: resume.participants, lastCommitted: resume.lastCommitted)
            for number in stride(from: resume.nextRound, through: plan.rounds, by: 1) {
                try Task.checkCancellation()
                // The deadline counts from before the wait for silos to connect.
                let deadline = ContinuousClock.now + .seconds(plan.roundDeadlineSeconds)
                let eligible = await eligibleSilos(for: plan)
                let round = RoundContext(plan: plan, text: text, hash: hash, number: number, kind: kind, eligible: eligible, deadline: deadline,
                                         wallDeadline: Date().addingTimeInterval(Double(plan.roundDeadlineSeconds)))
                try await play(round, &state)
            }
            if let round = state.lastCommitted, let model = state.global, let standardisation = state.standardisation {
                // Resumed with no round left to run: the participants are reconnecting to this broker.
                let resumed = resume.nextRound > plan.rounds
                try await evaluateFinal(plan, hash: hash, round: round, model: model, file: state.prepared, standardisation: standardisation,
                                        participants: state.participants, resumed: resumed)
            }
            try await durable { try await self.store.finishPlanRun(planHash: hash, state: .finished, reason: nil, fence: fence, at: Date(), actor: settings.brokerID) }
            plans[hash]?.state = .finished
        } catch {
            await runStopped(hash, by: error)
        }
        active.removeValue(forKey: hash)
        runs.removeValue(forKey: hash)
    }

    /// A run ended by an error: cancelled (by a person, or the broker stopping) or failed.
    private func runStopped(_ hash: String, by error: any Error) async {
        // A cancelled run may surface as the store's own error for the call it interrupted.
        guard error is CancellationError || Task.isCancelled else {
            plans[hash]?.state = .failed
            plans[hash]?.reason = "\(error)"
            logger.error("plan failed", metadata: ["plan": "\(hash.prefix(12))", "error": "\(error)"])
            _ = await Task { [reason = "\(error)"] in
                await self.recordEnd(hash, .failed, reason: reason)
            }.value
            return
        }
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
    }

    /// One round, from planned to committed or aborted (an abort is recorded, and the plan goes on).
    private func play(_ round: RoundContext, _ state: inout PlanRunState) async throws {
        guard var progress = try await offer(round) else { return }
        if state.global == nil {
            guard try await agreeOnModel(round, &progress, &state) else { return }
        }
        guard try await startTraining(round, progress, &state) else { return }
        guard let (updates, secureMean) = try await collectUpdates(round) else { return }
        try await aggregateAndCommit(round, updates: updates, secureMean: secureMean, &state)
    }

    /// Planned → offered: the round is recorded with the silos connected for the plan's data sets,
    /// offered to them, and their answers awaited. Their progress once the offer closed on a
    /// quorum of acceptances, nil when the round was aborted.
    private func offer(_ round: RoundContext) async throws -> RoundProgress? {
        let (plan, hash, number, eligible) = (round.plan, round.hash, round.number, round.eligible)
        var progress = RoundProgress(sampled: Set(eligible), quorum: plan.quorum)
        try await durable { try await self.store.openRound(RoundRecord(planHash: hash, number: number, state: .planned, sampled: eligible, survivors: [],
                                                                       deadline: round.wallDeadline, updatedAt: Date()), actor: settings.brokerID) }
        roundStarted[hash] = .now
        guard eligible.count >= plan.quorum else {
            try await abort(hash, number, progress, reason: "only \(eligible.count) silos connected serve \(plan.datasets), quorum is \(plan.quorum)")
            return nil
        }
        try await advance(hash, number, .offered, [])
        crashPoint("offered", number)
        active[hash] = ActiveRound(number: number, progress: progress, momentsShape: Self.momentsShape(plan, round.kind))
        var offer = Fedgate_V1_RoundOffer()
        offer.planHash = hash
        offer.round = UInt32(number)
        offer.planYaml = round.text
        offer.deadlineMs = Self.milliseconds(round.wallDeadline)
        send(.offer(offer), to: eligible)

        let offerDeadline = min(ContinuousClock.now + settings.offerWindow, ContinuousClock.now + .seconds(plan.roundDeadlineSeconds) / 3)
        await waitForRound(hash, until: offerDeadline)
        try Task.checkCancellation()
        progress = active[hash]!.progress
        guard progress.closeOffer() else {
            active[hash]!.progress = progress
            try await abort(hash, number, progress, reason: "\(progress.accepted.count) accepted, quorum is \(plan.quorum)")
            return nil
        }
        return progress
    }

    /// The first round of a plan: the feature count most accepting silos agree on is the model's (a
    /// silo that sent none or another count is left out of the round, so one silo cannot stop it),
    /// the consortium's standardisation combines their moments, and the initial model is made.
    /// False when too few agreed and the round was aborted.
    private func agreeOnModel(_ round: RoundContext, _ progress: inout RoundProgress, _ state: inout PlanRunState) async throws -> Bool {
        let (plan, hash, number) = (round.plan, round.hash, round.number)
        for (silo, reason) in progress.featureDisagreements() {
            try await durable { try await self.store.audit(.refused(.reply, .init(reason: reason, plan: hash, round: number)),
                                                           actor: self.settings.brokerID, subject: silo, at: Date()) }
            progress.refuse(silo, reason: reason)
        }
        let parts = progress.acceptedMoments
        guard progress.accepted.count >= plan.quorum, let first = parts.first else {
            active[hash]!.progress = progress
            try await abort(hash, number, progress, reason: "\(progress.accepted.count) accepting silos sent consistent feature moments, quorum is \(plan.quorum)")
            return false
        }
        state.standardisation = try Standardisation(combining: parts)
        let classes = max(2, parts.map(\.classes).max() ?? 2)
        state.global = try Network(kind: round.kind, inputs: first.sums.count, classes: classes, seed: settings.modelSeed)
        plans[hash]?.layerSizes = state.global!.layerSizes
        return true
    }

    /// Offered → training: the round's model file is made (or the last commit's taken), secure
    /// aggregation set up if the plan asks for it, and the task sent to the participants. False
    /// when secure aggregation cannot run and the round was aborted.
    private func startTraining(_ round: RoundContext, _ progress: RoundProgress, _ state: inout PlanRunState) async throws -> Bool {
        let (plan, hash, number) = (round.plan, round.hash, round.number)
        let global = state.global!
        // Set in place, not through a local copy of the round: a copy alive at aggregation would
        // share the model file, and so the global model's storage, and make the in-place update
        // copy 100 MB (measured with heaptrack).
        let file = try state.prepared ?? ModelPayload.modelFile(global, chunkBytes: chunkBytes)
        state.prepared = nil
        let (modelSHA, modelBytes) = (file.sha256, file.bytes)
        active[hash]!.progress = progress
        active[hash]!.model = consume file
        active[hash]!.dimension = global.parameters.count
        var setup: Fedgate_V1_SecAggSetup?
        if plan.secureAggregation {
            do {
                let made = try secureSetup(plan, hash: hash, number: number, participants: progress.accepted.sorted(), dimension: global.parameters.count)
                active[hash]!.secagg = (made.setup, SecureRoundState(configuration: made.configuration))
                setup = made.setup
            } catch {
                try await abort(hash, number, progress, reason: "secure aggregation cannot run: \(error)")
                return false
            }
        } else if plan.strategy.isFedAvg {
            active[hash]!.folded = WeightedAverage(dimension: global.parameters.count)
        }
        try await advance(hash, number, .training, progress.accepted)
        crashPoint("training", number)
        var task = Fedgate_V1_RoundTask()
        task.planHash = hash
        task.round = UInt32(number)
        task.modelSha256 = modelSHA
        task.modelBytes = UInt64(modelBytes)
        task.deadlineMs = Self.milliseconds(round.wallDeadline)
        task.featureMeans = state.standardisation!.means
        task.featureScales = state.standardisation!.scales
        task.classes = UInt32(global.classCount)
        if let setup { task.secagg = setup }
        send(.task(task), to: progress.accepted)
        if setup != nil { crashPoint("advertising", number) }
        return true
    }

    /// Training, until every participant uploaded or the deadline passed (through the secure
    /// exchange's phases in a secure round): the updates in silo order, and under secure
    /// aggregation the unmasked mean; nil when the round was aborted below quorum.
    private func collectUpdates(_ round: RoundContext) async throws -> (updates: [ClientUpdate], secureMean: [Float]?)? {
        let (hash, number) = (round.hash, round.number)
        var secureMean: [Float]?
        if active[hash]!.secagg != nil {
            switch try await secureExchange(hash, until: round.deadline) {
            case .failure(let reason):
                try await abort(hash, number, active[hash]!.progress, reason: reason.description)
                return nil
            case .success(let mean):
                secureMean = mean
            }
        } else {
            await waitForRound(hash, until: round.deadline)
        }
        try Task.checkCancellation()
        var progress = active[hash]!.progress
        let updates: [ClientUpdate]
        if secureMean != nil {
            // Training was closed by the secure exchange, before unmasking.
            updates = progress.updates.keys.sorted().map { progress.updates[$0]! }
        } else if let closed = progress.closeTraining() {
            updates = closed
        } else {
            active[hash]!.progress = progress
            try await abort(hash, number, progress, reason: "\(progress.updates.count) updates by the deadline, quorum is \(round.plan.quorum)")
            return nil
        }
        active[hash]!.progress = progress
        active[hash]!.model = nil
        return (updates, secureMean)
    }

    /// Training → aggregating → evaluating → committed: the updates (or the unmasked mean) are
    /// aggregated into the global model, refused updates audited, and the round committed with the
    /// checkpoint a restarted broker (or the standby) resumes from.
    private func aggregateAndCommit(_ round: RoundContext, updates: [ClientUpdate], secureMean: [Float]?, _ state: inout PlanRunState) async throws {
        let (hash, number) = (round.hash, round.number)
        let survivors = updates.map(\.silo)
        try await advance(hash, number, .aggregating, survivors)
        crashPoint("aggregating", number)
        let outcome = try aggregate(hash, updates: updates, secureMean: secureMean, &state)
        for r in outcome.rejected {
            metrics.count("fedgate_updates_rejected_total", [("reason", r.check.rawValue)])
            try await durable { try await self.store.audit(.refused(.update, .init(reason: r.description, plan: hash, round: number)),
                                                           actor: settings.brokerID, subject: r.silo, at: Date()) }
        }
        state.global!.parameters = outcome.parameters
        plans[hash]?.parameters = outcome.parameters
        try await advance(hash, number, .evaluating, survivors)
        crashPoint("evaluating", number)
        let progress = active[hash]!.progress
        let next = try ModelPayload.modelFile(state.global!, chunkBytes: chunkBytes)
        let checkpoint = PlanRun.Checkpoint(round: number, contentSHA256: next.sha256,
                                            standardisation: try Resume.encode(state.standardisation!, classes: state.global!.classCount))
        try await durable { try await self.store.commitRound(planHash: hash, number: number, survivors: survivors, checkpoint: checkpoint,
                                                             content: next.contents, fence: fence, at: Date(), actor: settings.brokerID) }
        state.prepared = next
        crashPoint("committed", number)
        roundEnded(hash, "committed", participants: survivors.count)
        active.removeValue(forKey: hash)
        plans[hash]?.rounds.append(.init(number: number, state: "committed", participants: survivors, refused: progress.refused,
                                         reportedAccuracy: progress.reportedAccuracy, reason: nil))
        updateMirror(hash, for: survivors)
        sendOutcome(hash, number, "committed", survivors, "", to: progress.sampled.sorted())
        logger.info("round committed", metadata: ["plan": "\(hash.prefix(12))", "round": "\(number)", "participants": "\(survivors)"])
        state.participants.formUnion(survivors)
        state.lastCommitted = number
    }

    /// The new global model: the unmasked mean added (each silo counted once: the broker never saw
    /// an update), FedAvg's folded mean added, or the plan's strategy over the updates in the clear.
    /// The status's copy of the parameters is let go first, so nothing model-sized is copied.
    private func aggregate(_ hash: String, updates: [ClientUpdate], secureMean: [Float]?, _ state: inout PlanRunState) throws -> AggregationOutcome {
        if let mean = secureMean {
            plans[hash]?.parameters = []
            VectorMath.axpy(1, mean, &state.global!.parameters)
            return AggregationOutcome(parameters: state.global!.parameters, rejected: [])
        }
        if let folded = active[hash]!.folded {
            active[hash]!.folded = nil
            plans[hash]?.parameters = []
            if folded.count > 0 { VectorMath.axpy(1, folded.takeMean(), &state.global!.parameters) }
            return AggregationOutcome(parameters: state.global!.parameters, rejected: active[hash]!.rejected)
        }
        var validated = Validated(state.strategy, validator: UpdateValidator(dimension: state.global!.parameters.count,
                                                                             maximumNorm: settings.maximumUpdateNorm))
        let outcome = try validated.aggregate(global: state.global!.parameters, updates: updates)
        state.strategy = validated.inner
        return outcome
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }

    /// The feature moments a plan's silos can send: one sum per column the plan reads (the silo's
    /// label among them or not), and the classes the model kind can have.
    static func momentsShape(_ plan: TrainingPlan, _ kind: ModelKind) -> (features: ClosedRange<Int>, classes: ClosedRange<Int>) {
        let columns = plan.columns.count
        return (max(1, columns - 1)...max(1, columns), 1...(kind == .logistic ? 2 : Network.maximumClasses))
    }
}
