import FedGateAggregation
import FedGateLearning
import FedGateSecureAggregation

/// A round's states as the store records them (`RoundRecord.State` has the same names).
public enum RoundStage: String, Sendable, CaseIterable { case planned, offered, training, aggregating, evaluating, committed, aborted }

/// One round at the broker, from planned to committed or aborted, as a state machine: the broker
/// tells it what happened (`handle(_:)` with the event of the action it just carried out, and the
/// silos' messages through `reply`, `upload`, the secure steps and `drop`), and it answers with the
/// one thing to do next. It decides every transition, every quorum and every abort with its reason;
/// the broker only executes (writes the store, sends, waits, aggregates). No I/O and no clock: the
/// broker feeds it `waitEnded` when every silo it waits for is done or the deadline passed.
///
/// Every transition is written before it takes effect: each `.record` comes before the message or
/// the work of the stage it names.
///
///     planned ─record(offered)─▶ offering ─offerClosed─▶ [agreeing ─▶ makingModel] ─▶ preparing
///        ─record(training)─▶ sendingTask ─▶ training ─waitEnded─▶ record(aggregating) ─▶ aggregating
///        ─record(evaluating)─▶ committing ─▶ committed
///     secure rounds: training = advertising ─keys─▶ sharing ─relay─▶ masking ─unmask─▶ unmasking ─▶ decoding
///     any live state ─(below quorum or threshold, setup failed)─▶ aborting ─▶ aborted
public struct RoundMachine<Binding: Sendable>: Sendable {
    public enum State: Equatable, Sendable {
        /// Recorded as planned; `start` decides whether it can be offered.
        case planned
        /// Waiting for `offered` to be durable, then for the offer to go out.
        case recordingOffer
        /// The offer is out: answers arrive until `offerClosed`.
        case offering
        /// First round: the accepting silos whose moments disagree are being recorded as refused.
        case agreeing
        /// First round: the consortium's standardisation and initial model are being made.
        case makingModel
        /// The round's model file and, if asked for, its secure-aggregation setup are being made.
        case preparing
        case recordingTraining
        case sendingTask
        /// Waiting for uploads (and in a secure round for the current phase's steps) until `waitEnded`.
        case training
        /// A secure round's phase closed: its messages are going out (`sent` next).
        case relaying(SecureRoundState<Binding>.Phase)
        /// The survivors' masked sum was unmasked: the broker decodes it into the mean.
        case decoding
        case recordingAggregating
        case aggregating
        case recordingEvaluating
        case committing
        case aborting(String)
        case committed([String])
        case aborted(String)

        /// The store's name for where the round stands.
        public var stage: RoundStage {
            switch self {
            case .planned: .planned
            case .recordingOffer, .offering, .agreeing, .makingModel, .preparing, .recordingTraining: .offered
            case .sendingTask, .training, .relaying, .decoding, .recordingAggregating: .training
            case .aggregating, .recordingEvaluating: .aggregating
            case .committing: .evaluating
            case .committed: .committed
            case .aborting, .aborted: .aborted
            }
        }
    }

    /// What the broker does next; when it is done it calls `handle` with the matching event.
    public enum Action: Sendable {
        /// Write the round's new stage with its participants so far (→ `recorded`).
        case record(RoundStage, participants: [String])
        /// Send the offer to these silos, then wait for their answers (→ `offerClosed`).
        case offer(to: [String])
        /// Audit each silo left out for its feature moments (→ `disagreementsRecorded`).
        case recordDisagreements([(silo: String, reason: String)])
        /// Make the consortium's standardisation and the initial model from these moments (→ `modelMade`).
        case makeModel([ReleasedStatistics])
        /// Make the round's model file and, for a secure round, its setup (→ `prepared` or `preparationFailed`).
        case prepare(participants: [String])
        /// Send the task to the participants (→ `sent`).
        case sendTask(to: [String])
        /// Wait until every silo waited for is done or the deadline passes (→ `waitEnded`).
        case wait
        /// Send each live silo its neighbours' key advertisements with every binding (→ `sent`).
        case sendKeys([(silo: String, advertisements: [KeyAdvertisement])], bindings: [Binding])
        /// Relay to each silo the shares addressed to it (→ `sent`).
        case relayShares([(silo: String, shares: [EncryptedShare], sharers: [String])])
        /// Tell the survivors who survived, for each to sign (→ `sent`).
        case checkConsistency(ConsistencyCheck, to: [String])
        /// Ask the survivors to unmask, with their signatures of the list (→ `sent`).
        case requestUnmasking(UnmaskingRequest, to: [String])
        /// Decode the unmasked sum of the survivors' encoded updates into their mean (→ `decoded`).
        case decode(sum: [UInt32], survivors: [String])
        /// Aggregate the updates (under secure aggregation: add the decoded mean) (→ `aggregated`).
        case aggregate([ClientUpdate])
        /// Commit the round with its checkpoint (→ `committed`).
        case commit(participants: [String])
        /// Record the abort with its reason and tell the offered silos (→ `aborted`).
        case abort(reason: String)
        /// The round is over.
        case finished(committed: Bool)
    }

    /// What the broker did, or what happened, since the last action.
    public enum Event: Sendable {
        case recorded
        case offerClosed
        case disagreementsRecorded
        case modelMade
        case prepared(secure: SecureRoundState<Binding>?)
        case preparationFailed(String)
        case sent
        case waitEnded
        case decoded
        case aggregated
        case committed
        case aborted
    }

    /// An event that does not fit the state: the broker's own mistake, never a silo's.
    public struct OutOfOrder: Error, Equatable, CustomStringConvertible {
        public let event: String
        public let state: String
        public var description: String { "round event '\(event)' in state \(state)" }

        public init(event: String, state: String) {
            self.event = String(event.prefix(80))
            self.state = String(state.prefix(80))
        }
    }

    public let number: Int
    public private(set) var state = State.planned
    public private(set) var progress: RoundProgress
    public private(set) var secure: SecureRoundState<Binding>?
    /// First round: the silos being recorded as left out for their moments, with the reasons.
    private var disagreements: [(silo: String, reason: String)] = []
    /// Whether the plan has no model yet (its first round agrees on one from the silos' moments).
    public let needsModel: Bool
    /// The plan's data sets (named when too few silos serve them).
    public let datasets: [String]

    public init(number: Int, eligible: [String], quorum: Int, datasets: [String], needsModel: Bool) {
        self.number = number
        self.needsModel = needsModel
        self.datasets = datasets
        progress = RoundProgress(sampled: Set(eligible), quorum: quorum)
    }

    public var quorum: Int { progress.quorum }
    public var isFinished: Bool {
        switch state { case .committed, .aborted: true; default: false }
    }

    /// The first action, once the round is recorded as planned.
    public mutating func start() throws -> Action {
        guard state == .planned else { throw outOfOrder("start") }
        let eligible = progress.sampled.sorted()
        guard eligible.count >= quorum else {
            return abort("only \(eligible.count) silos connected serve \(datasets), quorum is \(quorum)")
        }
        state = .recordingOffer
        return .record(.offered, participants: [])
    }

    public mutating func handle(_ event: Event) throws -> Action {
        switch (state, event) {
        case (.recordingOffer, .recorded):
            state = .offering
            return .offer(to: progress.sampled.sorted())
        case (.offering, .offerClosed):
            guard progress.closeOffer() else {
                // A silo that accepted and then left is not counted.
                return abort("\(progress.liveAccepted.count) accepted, quorum is \(quorum)")
            }
            guard needsModel else { return prepare() }
            state = .agreeing
            disagreements = progress.featureDisagreements()
            return .recordDisagreements(disagreements)
        case (.agreeing, .disagreementsRecorded):
            return applyDisagreements()
        case (.makingModel, .modelMade):
            return prepare()
        case (.preparing, .prepared(let secure)):
            self.secure = secure
            state = .recordingTraining
            return .record(.training, participants: progress.accepted)
        case (.preparing, .preparationFailed(let reason)):
            return abort("secure aggregation cannot run: \(reason)")
        case (.recordingTraining, .recorded):
            state = .sendingTask
            return .sendTask(to: progress.accepted)
        case (.sendingTask, .sent), (.relaying, .sent):
            state = .training
            return .wait
        case (.training, .waitEnded):
            return secure == nil ? closeTraining() : closeSecurePhase()
        case (.decoding, .decoded):
            return recordAggregating()
        case (.recordingAggregating, .recorded):
            state = .aggregating
            return .aggregate(uploaded)
        case (.aggregating, .aggregated):
            state = .recordingEvaluating
            return .record(.evaluating, participants: survivors)
        case (.recordingEvaluating, .recorded):
            state = .committing
            return .commit(participants: survivors)
        case (.committing, .committed):
            state = .committed(survivors)
            return .finished(committed: true)
        case (.aborting(let reason), .aborted):
            state = .aborted(reason)
            return .finished(committed: false)
        default:
            throw outOfOrder("\(event)")
        }
    }

    /// The first round's audited disagreements applied (the refusals are the ones just audited, not
    /// a second reading of the moments), then the model made from the consistent moments.
    private mutating func applyDisagreements() -> Action {
        for (silo, reason) in disagreements { progress.refuse(silo, reason: reason) }
        disagreements = []
        let moments = progress.acceptedMoments
        guard progress.accepted.count >= quorum, !moments.isEmpty else {
            return abort("\(progress.accepted.count) accepting silos sent consistent feature moments, quorum is \(quorum)")
        }
        state = .makingModel
        return .makeModel(moments)
    }

    /// The round is stopped from outside (the plan cancelled, the broker stopping): the abort to
    /// record, unless the round is already over.
    public mutating func stop(reason: String) -> Action? {
        isFinished ? nil : abort(reason)
    }

    // MARK: What silos send

    /// A silo's answer to the offer (see `RoundProgress.reply`).
    public mutating func reply(from silo: String, accepted: Bool, reasons: [String], moments: ReleasedStatistics?) throws {
        guard state == .offering else { throw RoundRefusal.offerClosed(silo) }
        try progress.reply(from: silo, accepted: accepted, reasons: reasons, moments: moments)
    }

    /// A participant's update (in a secure round, the record that its masked input arrived).
    public mutating func upload(_ update: ClientUpdate, metrics: [String: Double]) throws {
        try progress.upload(update, metrics: metrics)
    }

    /// The secure round's state, for a silo's protocol step (the step is checked there).
    public mutating func secureStep<T>(_ body: (inout SecureRoundState<Binding>) throws -> T) throws -> T {
        guard secure != nil else { throw SecureAggregationError.malformed("a secure-aggregation step in a round without secure aggregation") }
        return try body(&secure!)
    }

    /// A silo left: it is no longer waited for.
    public mutating func drop(_ silo: String) {
        progress.drop(silo)
        secure?.drop(silo)
    }

    /// Whether a `wait` can end before its deadline: every silo it waits for is done.
    public var isWaitOver: Bool {
        switch state {
        case .offering: progress.everyoneAnswered
        case .training: secure?.isPhaseComplete(everyoneUploaded: progress.everyoneUploaded) ?? progress.everyoneUploaded
        default: true
        }
    }

    public func isParticipant(_ silo: String) -> Bool { progress.isParticipant(silo) }
    public func hasUploaded(_ silo: String) -> Bool { progress.hasUploaded(silo) }

    // MARK: Transitions

    /// The silos whose updates count, in silo order.
    public var survivors: [String] { progress.updates.keys.sorted() }
    private var uploaded: [ClientUpdate] { survivors.map { progress.updates[$0]! } }

    private mutating func prepare() -> Action {
        state = .preparing
        return .prepare(participants: progress.accepted)
    }

    private mutating func closeTraining() -> Action {
        guard progress.closeTraining() != nil else {
            return abort("\(progress.updates.count) updates by the deadline, quorum is \(quorum)")
        }
        return recordAggregating()
    }

    private mutating func recordAggregating() -> Action {
        state = .recordingAggregating
        return .record(.aggregating, participants: survivors)
    }

    /// The secure round's current phase ends (its deadline is the round's): the next phase's
    /// messages, or the abort when too few silos are left.
    private mutating func closeSecurePhase() -> Action {
        do {
            switch secure!.phase {
            case .advertising:
                let keys = try secure!.closeAdvertising()
                state = .relaying(.advertising)
                return .sendKeys(keys.keys, bindings: keys.bindings)
            case .sharing:
                let relays = try secure!.closeSharing()
                state = .relaying(.sharing)
                return .relayShares(relays)
            case .masking:
                guard progress.closeTraining() != nil else {
                    return abort("\(progress.updates.count) masked inputs by the deadline, quorum is \(quorum)")
                }
                let consistency = try secure!.closeMasking()
                state = .relaying(.masking)
                return .checkConsistency(consistency.check, to: consistency.to)
            case .consistency:
                let unmasking = try secure!.closeConsistency()
                state = .relaying(.consistency)
                return .requestUnmasking(unmasking.request, to: unmasking.to)
            case .unmasking:
                let (sum, survivors) = try secure!.unmask()
                state = .decoding
                return .decode(sum: sum, survivors: survivors)
            }
        } catch {
            return abort("secure aggregation: \(error)")
        }
    }

    private mutating func abort(_ reason: String) -> Action {
        state = .aborting(reason)
        return .abort(reason: reason)
    }

    private func outOfOrder(_ event: String) -> OutOfOrder {
        OutOfOrder(event: String(describing: event).prefix { $0 != "(" }.description, state: "\(state)")
    }
}
