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

/// A plan's rounds, one after another. Each round is a `RoundMachine`: it decides every transition,
/// quorum and abort; this file only executes its actions (store writes, messages, waits, the
/// model's arithmetic) and hands it the event of each. Every transition is written to the store
/// before it takes effect.
extension BrokerCoordinator {
    typealias Machine = RoundMachine<SecAggBinding>

    /// What a plan's run carries from one round to the next.
    struct PlanRunState {
        var global: Network?
        var standardisation: Standardisation?
        var strategy: AnyAggregationStrategy
        var participants: Set<String>
        var lastCommitted: Int?
        /// The file the last commit checkpointed: the next round's model, hashed once, not again.
        var prepared: ModelFile?
        /// SCAFFOLD: the server's control variate (zero until the first round updates it).
        var scaffoldControl: [Float]?
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
        defer { announceEnd(plan, hash: hash) }
        do {
            if plan.isEvaluation {
                try await runEvaluation(plan, text: text, hash: hash)
            } else if plan.isStatistics {
                try await runStatistics(plan, text: text, hash: hash)
            } else {
                try await runRounds(plan, text: text, hash: hash, from: resume)
            }
            try await runStore.finishPlanRun(planHash: hash, state: .finished, reason: nil, fence: fence, at: now(), actor: settings.brokerID)
            plans[hash]?.state = .finished
        } catch {
            await runStopped(hash, by: error)
        }
        active.removeValue(forKey: hash)
        runs.removeValue(forKey: hash)
        attackWatches.removeValue(forKey: hash)
    }

    /// A training plan's rounds, from `resume` on, then its final model's evaluation.
    private func runRounds(_ plan: TrainingPlan, text: String, hash: String, from resume: Resume) async throws {
        let kind = try ModelKind(parsing: plan.model)
        var state = PlanRunState(global: resume.global, standardisation: resume.standardisation, strategy: try plan.strategy.make(),
                                 participants: resume.participants, lastCommitted: resume.lastCommitted, scaffoldControl: resume.scaffoldControl)
        if resume.lastCommitted == nil, resume.nextRound <= plan.rounds { try await admit(plan, text: text, hash: hash) }
        for number in stride(from: resume.nextRound, through: plan.rounds, by: 1) {
            try Task.checkCancellation()
            try await takeRoundSlot(hash, round: number)
            defer { releaseRoundSlot(hash) }
            // The deadline counts from before the wait for silos to connect (after the wait for a slot).
            let deadline = ContinuousClock.now + .seconds(plan.roundDeadlineSeconds)
            let eligible = Self.sampled(await eligibleSilos(for: plan), plan, hash: hash, round: number)
            let round = RoundContext(plan: plan, text: text, hash: hash, number: number, kind: kind, eligible: eligible, deadline: deadline,
                                     wallDeadline: now().addingTimeInterval(Double(plan.roundDeadlineSeconds)))
            try await play(round, &state)
        }
        guard state.lastCommitted != nil else {
            throw BrokerError.everyRoundAborted(plan: hash, last: plans[hash]?.rounds.last?.reason ?? "none ran")
        }
        if let round = state.lastCommitted, let model = state.global, let standardisation = state.standardisation {
            // Resumed with no round left to run: the participants are reconnecting to this broker.
            let resumed = resume.nextRound > plan.rounds
            // (A SCAFFOLD checkpoint carries the server's control; the registry's file is the model alone.)
            try await evaluateFinal(plan, hash: hash, round: round, model: model, file: plan.scaffold == true ? nil : state.prepared, standardisation: standardisation,
                                    participants: state.participants, resumed: resumed)
        }
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
        let stopping = stopping
        let reason = stopping ? "the broker stopped" : "the plan was cancelled"
        let round = active[hash].flatMap { r in r.machine.isFinished ? nil : (r.number, r.machine.progress) }
        if !stopping { plans[hash]?.state = .cancelled }
        _ = await Task {
            if let (number, progress) = round {
                try? await self.abort(hash, number, progress, reason: reason)
            }
            if !stopping {
                await self.recordEnd(hash, .cancelled, reason: "cancelled")
            }
        }.value
    }

    /// One round, from planned to committed or aborted (an abort is recorded, and the plan goes on):
    /// the round's machine says what to do, this does it and tells the machine it is done.
    private func play(_ round: RoundContext, _ state: inout PlanRunState) async throws {
        let (plan, hash, number) = (round.plan, round.hash, round.number)
        try await runStore.openRound(RoundRecord(planHash: hash, number: number, state: .planned, sampled: round.eligible, survivors: [],
                                                                       deadline: round.wallDeadline, updatedAt: now()), actor: settings.brokerID)
        roundStarted[hash] = .now
        active[hash] = ActiveRound(number: number, machine: Machine(number: number, eligible: round.eligible, quorum: plan.quorum,
                                                                    datasets: plan.datasets, needsModel: state.global == nil),
                                   momentsShape: Self.momentsShape(plan, round.kind))
        var action = try active[hash]!.machine.start()
        while true {
            switch action {
            case .finished:
                active.removeValue(forKey: hash)
                return
            case .abort(let reason):
                try await abort(hash, number, active[hash]!.machine.progress, reason: reason)
                action = try active[hash]!.machine.handle(.aborted)
            default:
                try Task.checkCancellation()
                let event = try await execute(action, round, &state)
                action = try active[hash]!.machine.handle(event)
            }
        }
    }

    /// Carries out one of the machine's actions; the event that says it is done.
    private func execute(_ action: Machine.Action, _ round: RoundContext, _ state: inout PlanRunState) async throws -> Machine.Event {
        let (hash, number) = (round.hash, round.number)
        switch action {
        case .record(let stage, let participants):
            try await advance(hash, number, RoundRecord.State(stage), participants)
            crashPoint(stage.rawValue, number)
            return .recorded
        case .offer(let silos):
            sendOffer(hash, round: number, text: round.text, deadline: round.wallDeadline, to: silos, wantsStatistics: state.global == nil)
            await waitForRound(hash, until: ContinuousClock.now + offerWindow(round.plan))
            return .offerClosed
        case .recordDisagreements(let left):
            for (silo, reason) in left {
                try await runStore.audit(.refused(.reply, .init(reason: reason, plan: hash, round: number)),
                                                               actor: self.settings.brokerID, subject: silo, at: now())
            }
            return .disagreementsRecorded
        case .makeModel(let moments):
            state.standardisation = try round.plan.statisticsRelease(featureCount: moments[0].sums.count).standardisation(combining: moments)
            let inputs = Self.split(state.standardisation!, round.kind).features.means.count
            let classes = round.kind == .linear ? 1 : max(2, moments.map(\.classes).max() ?? 2)
            state.global = try Network(kind: round.kind, inputs: inputs, classes: classes, seed: settings.modelSeed)
            plans[hash]?.layerSizes = state.global!.layerSizes
            return .modelMade
        case .prepare(let participants):
            return try prepare(round, participants: participants, &state)
        case .sendTask(let silos):
            sendTask(round, to: silos, state)
            if active[hash]!.secureSetup != nil { crashPoint("advertising", number) }
            return .sent
        case .wait:
            await waitForRound(hash, until: round.deadline)
            return .waitEnded
        case .sendKeys, .relayShares, .checkConsistency, .requestUnmasking, .decode:
            return try secureStep(action, hash: hash, number: number)
        case .aggregate(let updates):
            try await aggregate(round, updates: updates, &state)
            return .aggregated
        case .commit(let survivors):
            try await commit(round, survivors: survivors, &state)
            return .committed
        case .abort, .finished:
            throw Machine.OutOfOrder(event: "execute \(action)", state: "\(active[hash]!.machine.state)")
        }
    }

    /// Offers round `round` of the plan (0: its admission offer) to these silos; asks for their
    /// statistics release when the plan has no model yet.
    func sendOffer(_ hash: String, round: Int, text: String, deadline: Date, to silos: [String], wantsStatistics: Bool = false) {
        var offer = Fedgate_V1_RoundOffer()
        offer.wantsStatistics = wantsStatistics
        offer.planHash = hash
        offer.round = UInt32(round)
        offer.planYaml = text
        offer.deadlineMs = Self.milliseconds(deadline)
        send(.offer(offer), to: silos)
    }

    /// How long silos have to answer an offer of the plan: `offerWindow`, at most a third of its round deadline.
    func offerWindow(_ plan: TrainingPlan) -> Duration {
        min(settings.offerWindow, .seconds(plan.roundDeadlineSeconds) / 3)
    }

    /// The round's model file is made (or the last commit's taken), and secure aggregation set up
    /// if the plan asks for it.
    private func prepare(_ round: RoundContext, participants: [String], _ state: inout PlanRunState) throws -> Machine.Event {
        let (plan, hash, number) = (round.plan, round.hash, round.number)
        let dimension = state.global!.parameters.count
        // Set in place, not through a local copy of the round: a copy alive at aggregation would
        // share the model file, and so the global model's storage, and make the in-place update
        // copy 100 MB (measured with heaptrack).
        scaffoldPrepare(plan, hash: hash, dimension: dimension, &state.scaffoldControl)
        let file = try state.prepared ?? ModelPayload.modelFile(state.global!, chunkBytes: chunkBytes, inputs: Self.inputs(plan, state.standardisation),
                                                                  control: state.scaffoldControl)
        state.prepared = nil
        active[hash]!.model = consume file
        active[hash]!.dimension = dimension
        active[hash]!.codec = plan.compression
        guard plan.secureAggregation else {
            if plan.strategy.isFedAvg { active[hash]!.folded = WeightedAverage(dimension: dimension) }
            return .prepared(secure: nil)
        }
        do {
            let made = try secureSetup(plan, hash: hash, number: number, participants: participants.sorted(), dimension: dimension)
            active[hash]!.secureSetup = made.setup
            return .prepared(secure: SecureRoundState(configuration: made.configuration))
        } catch {
            return .preparationFailed("\(error)")
        }
    }

    private func sendTask(_ round: RoundContext, to silos: [String], _ state: PlanRunState) {
        let r = active[round.hash]!
        var task = Fedgate_V1_RoundTask()
        task.planHash = round.hash
        task.round = UInt32(round.number)
        task.modelSha256 = r.model!.sha256
        task.modelBytes = UInt64(r.model!.bytes)
        task.deadlineMs = Self.milliseconds(round.wallDeadline)
        let (features, target) = Self.split(state.standardisation!, round.kind)
        task.featureMeans = features.means
        task.featureScales = features.scales
        if let target { (task.targetMean, task.targetScale) = target }
        task.classes = UInt32(state.global!.classCount)
        if let setup = r.secureSetup { task.secagg = setup }
        send(.task(task), to: silos)
    }

    /// The updates (or the unmasked mean) are aggregated into the global model and refused
    /// updates audited.
    private func aggregate(_ round: RoundContext, updates: [ClientUpdate], _ state: inout PlanRunState) async throws {
        let (hash, number) = (round.hash, round.number)
        // The round's model file shares the global model's storage: let go before the update in place.
        active[hash]!.model = nil
        let outcome = try aggregated(hash, updates: updates, &state)
        for r in outcome.rejected {
            metrics.count("fedgate_updates_rejected_total", [("reason", r.check.rawValue)])
            try await runStore.audit(.refused(.update, .init(reason: r.description, plan: hash, round: number)),
                                                           actor: settings.brokerID, subject: r.silo, at: now())
        }
        try await flag(hash, round: number, AttackFlag.of(outcome, strategy: round.plan.strategy.text))
        state.global!.parameters = outcome.parameters
        plans[hash]?.parameters = outcome.parameters
        scaffoldStep(hash, offered: round.eligible.count, &state.scaffoldControl)
    }

    /// The round committed with the checkpoint a restarted broker (or the standby) resumes from.
    private func commit(_ round: RoundContext, survivors: [String], _ state: inout PlanRunState) async throws {
        let (hash, number) = (round.hash, round.number)
        let progress = active[hash]!.machine.progress
        let next = try ModelPayload.modelFile(state.global!, chunkBytes: chunkBytes, inputs: Self.inputs(round.plan, state.standardisation),
                                              control: state.scaffoldControl)
        let checkpoint = PlanRun.Checkpoint(round: number, contentSHA256: next.sha256,
                                            standardisation: try Resume.encode(state.standardisation!, classes: state.global!.classCount))
        try await runStore.commitRound(planHash: hash, number: number, survivors: survivors, checkpoint: checkpoint,
                                                             content: next.contents, fence: fence, at: now(), actor: settings.brokerID)
        state.prepared = next
        crashPoint("committed", number)
        roundEnded(hash, "committed", participants: survivors.count)
        plans[hash]?.rounds.append(.init(number: number, state: "committed", participants: survivors, refused: progress.refused,
                                         reportedAccuracy: progress.reportedAccuracy, reason: nil, flagged: active[hash]!.flags,
                                         bytesIn: active[hash]!.bytesIn, rawBytes: active[hash]!.rawBytes, sampled: progress.sampled.sorted()))
        if active[hash]!.bytesIn > 0 {
            metrics.set("fedgate_round_compression_ratio", Double(active[hash]!.rawBytes) / Double(active[hash]!.bytesIn))
            try await runStore.audit(.roundTraffic(.init(round: number, bytesIn: active[hash]!.bytesIn, rawBytes: active[hash]!.rawBytes, codec: round.plan.compression)),
                                     actor: settings.brokerID, subject: hash, at: now())
        }
        updateMirror(hash, for: survivors)
        sendOutcome(hash, number, "committed", survivors, "", to: progress.sampled.sorted())
        logger.info("round committed", metadata: ["plan": "\(hash.prefix(12))", "round": "\(number)", "participants": "\(survivors)"])
        state.participants.formUnion(survivors)
        state.lastCommitted = number
    }

    /// The new global model: the unmasked mean added (each silo counted once: the broker never saw
    /// an update), FedAvg's folded mean added, or the plan's strategy over the updates in the clear.
    /// The status's copy of the parameters is let go first, so nothing model-sized is copied.
    private func aggregated(_ hash: String, updates: [ClientUpdate], _ state: inout PlanRunState) throws -> AggregationOutcome {
        if let mean = active[hash]!.secureMean {
            active[hash]!.secureMean = nil
            plans[hash]?.parameters = []
            VectorMath.axpy(1, mean, &state.global!.parameters)
            return AggregationOutcome(parameters: state.global!.parameters, rejected: [])
        }
        if let folded = active[hash]!.folded {
            active[hash]!.folded = nil
            plans[hash]?.parameters = []
            if folded.count > 0 { VectorMath.axpy(1, folded.takeMean(), &state.global!.parameters) }
            // Each update was validated as it arrived (a refused one was audited then).
            return AggregationOutcome(parameters: state.global!.parameters, rejected: [])
        }
        var validated = Validated(state.strategy, validator: UpdateValidator(dimension: state.global!.parameters.count,
                                                                             maximumNorm: settings.maximumUpdateNorm))
        let outcome = try validated.aggregate(global: state.global!.parameters, updates: updates)
        state.strategy = validated.inner
        return outcome
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }

    /// The silos a round offers: every eligible one, or the plan's sample of them (`RoundSampling`:
    /// drawn from the plan's hash and the round's number, so anyone can check it).
    static func sampled(_ eligible: [String], _ plan: TrainingPlan, hash: String, round: Int) -> [String] {
        guard let s = plan.sampling else { return eligible }
        let sampling = s.count.map { RoundSampling(.count($0)) } ?? RoundSampling(.fraction(s.fraction ?? 1, floor: s.min ?? plan.quorum))
        return sampling.sample(eligible, planHash: hash, round: round)
    }

    /// What the plan's model files say about their inputs: the plan's columns (when they are the
    /// features: a label among them is each silo's own to drop) and the consortium's standardisation.
    static func inputs(_ plan: TrainingPlan, _ standardisation: Standardisation?) -> ModelPayload.Inputs? {
        let names = plan.schema.map { SchemaEncoding(schema: $0).inputNames } ?? plan.columns
        guard let standardisation, let kind = try? ModelKind(parsing: plan.model) else { return nil }
        let (features, target) = split(standardisation, kind)
        return ModelPayload.Inputs(columns: names.count == features.means.count ? names : nil, standardisation: features, schema: plan.schema, target: target)
    }

    /// A plan's standardisation as its silos use it: the features', and a regression model's
    /// target's (kept last: the target is released as one more coordinate).
    static func split(_ s: Standardisation, _ kind: ModelKind) -> (features: Standardisation, target: (mean: Float, scale: Float)?) {
        guard kind == .linear, let mean = s.means.last, let scale = s.scales.last else { return (s, nil) }
        return (Standardisation(means: Array(s.means.dropLast()), scales: Array(s.scales.dropLast())), (mean, scale))
    }

    /// The feature moments a plan's silos can send: one sum per column the plan reads (the silo's
    /// label among them or not), and the classes the model kind can have; through a schema, one per
    /// input of its encoding and exactly the target's classes.
    static func momentsShape(_ plan: TrainingPlan, _ kind: ModelKind) -> (features: ClosedRange<Int>, classes: ClosedRange<Int>) {
        if let schema = plan.schema {
            // Through a schema every silo has exactly the encoding's inputs and the target's classes;
            // a regression target is one more coordinate, and one "class".
            let inputs = SchemaEncoding(schema: schema).inputNames.count
            guard let classes = schema.target.task.classCount else { return (inputs + 1...inputs + 1, 1...1) }
            return (inputs...inputs, classes...classes)
        }
        let columns = plan.columns.count
        return (max(1, columns - 1)...max(1, columns), 1...(kind == .logistic ? 2 : Network.maximumClasses))
    }
}

extension RoundRecord.State {
    /// The store's name for a stage of the round's machine: the same names, checked both ways by
    /// `RoundStageTests` (the switch below maps back, and fails to compile on a new store state).
    init(_ stage: RoundStage) {
        guard let state = Self(rawValue: stage.rawValue) else { preconditionFailure("the store has no round state '\(stage.rawValue)'") }
        self = state
    }
}

extension RoundStage {
    init(_ state: RoundRecord.State) {
        self = switch state {
        case .planned: .planned
        case .offered: .offered
        case .training: .training
        case .aggregating: .aggregating
        case .evaluating: .evaluating
        case .committed: .committed
        case .aborted: .aborted
        }
    }
}
