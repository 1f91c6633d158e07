import Foundation

/// A plan a broker runs, as kept in the store so that a restarted broker, or the standby that
/// takes over, picks it up: the plan's text, where it stands, and the checkpoint of its last
/// committed round.
public struct PlanRun: Sendable, Equatable {
    public enum State: String, Sendable { case running, finished, failed, cancelled }

    /// The global model after a committed round: its safetensors file (a `model_content` row) and
    /// the feature standardisation the silos' moments gave (JSON: means, scales, classes).
    public struct Checkpoint: Sendable, Equatable {
        public let round: Int
        public let contentSHA256: String
        public let standardisation: String
        public init(round: Int, contentSHA256: String, standardisation: String) {
            self.round = round
            self.contentSHA256 = contentSHA256
            self.standardisation = standardisation
        }
    }

    public let planHash: String
    public let planYAML: String
    public let submitter: String
    public var state: State
    public var reason: String?
    public var checkpoint: Checkpoint?
    public let submittedAt: Date
    public var updatedAt: Date
    /// Which run of the plan this is: 1, and one more each time the same plan is submitted again after a run ended.
    public var run = 1

    public init(planHash: String, planYAML: String, submitter: String, state: State, reason: String? = nil, checkpoint: Checkpoint? = nil,
                submittedAt: Date, updatedAt: Date) {
        self.planHash = planHash
        self.planYAML = planYAML
        self.submitter = submitter
        self.state = state
        self.reason = reason
        self.checkpoint = checkpoint
        self.submittedAt = submittedAt
        self.updatedAt = updatedAt
    }
}

/// Who leads among brokers sharing one store: a row with a holder, a term that grows each time the
/// holder changes, and an expiry the holder keeps pushing forward.
public struct BrokerLease: Sendable, Equatable {
    public let holder: String
    public let term: Int
    public let expiresAt: Date
    public init(holder: String, term: Int, expiresAt: Date) {
        self.holder = holder
        self.term = term
        self.expiresAt = expiresAt
    }

    /// What `holder` asking for the lease at `now` for `duration` gets, given the current row.
    ///
    /// Renewing (`renewing`: the term held): the same term with a new expiry while the row still
    /// names this holder and term, even when it lapsed meanwhile (a frozen or slow broker nobody
    /// replaced keeps its lease: a takeover would have moved the term); nil once it moved.
    ///
    /// Claiming afresh: absent → term 1; lapsed, or still this holder's (a restart under the same
    /// name) → the next term, so whatever an earlier process of the same name writes is fenced out;
    /// nil while another holder's lease runs.
    public static func claim(current: BrokerLease?, holder: String, now: Date, duration: TimeInterval, renewing term: Int? = nil) -> BrokerLease? {
        let expiry = now.addingTimeInterval(duration)
        if let term {
            guard let current, current.holder == holder, current.term == term else { return nil }
            return BrokerLease(holder: holder, term: term, expiresAt: expiry)
        }
        guard let current else { return BrokerLease(holder: holder, term: 1, expiresAt: expiry) }
        if current.holder == holder || current.expiresAt <= now { return BrokerLease(holder: holder, term: current.term + 1, expiresAt: expiry) }
        return nil
    }
}

/// The lease a write is made under: refused once the row names another holder or term. Expiry is
/// not checked: it only decides who may claim; a term nobody took over is still the only leader
/// (the check reads the row locked, so it is ordered with every claim).
public struct LeaseFence: Sendable, Equatable {
    public let name: String
    public let holder: String
    public let term: Int
    public init(name: String, holder: String, term: Int) {
        self.name = name
        self.holder = holder
        self.term = term
    }

    func check(_ current: BrokerLease?) throws {
        guard let current, current.holder == holder, current.term == term else {
            let who = current.map { "\($0.holder) (term \($0.term))" } ?? "nobody"
            throw LedgerError.storage("the '\(name)' lease of term \(term) is no longer \(holder)'s (now held by \(who)); nothing written")
        }
    }
}

/// The plans a broker runs, with their checkpoints; every change audited in its transaction.
public protocol PlanRunRecords: Sendable {
    /// Records a plan as running (a finished, failed or cancelled run of the same plan is replaced),
    /// audited as `plan.submit` with `submission`.
    func startPlanRun(_ run: PlanRun, submission: AuditEvent.PlanSubmission, actor: String) async throws
    /// Moves a round to committed and records the plan's checkpoint (its model file stored by
    /// content hash, which it must match) in one transaction, under `fence` when given.
    func commitRound(planHash: String, number: Int, survivors: [String], checkpoint: PlanRun.Checkpoint, content: [UInt8],
                     fence: LeaseFence?, at: Date, actor: String) async throws
    /// Ends a running plan (audited as `plan.<state>`), under `fence` when given.
    func finishPlanRun(planHash: String, state: PlanRun.State, reason: String?, fence: LeaseFence?, at: Date, actor: String) async throws
    func planRuns() async throws -> [PlanRun]
}

/// The brokers' leader lease.
public protocol LeaseStore: Sendable {
    /// Takes the named lease, or renews term `renewing` of it (see `BrokerLease.claim`); nil while
    /// another holder's runs or once the renewed term has moved on. Every new term is audited
    /// (`broker.lease`); renewals are not.
    func claimLease(_ name: String, holder: String, duration: TimeInterval, now: Date, renewing: Int?) async throws -> BrokerLease?
    /// Gives the lease up (it expires at once) if `holder` has it.
    func releaseLease(_ name: String, holder: String, now: Date) async throws
    /// Ends the database sessions that a holder of `name` left inside a transaction, idle for longer
    /// than `idleLongerThan`, once its lease has lapsed (or when the holder is `claimant` itself, an
    /// earlier process of the same name): a frozen broker's, whose locks would otherwise stop every
    /// claim for as long as it stays frozen. Nothing while another holder's lease runs. Returns how
    /// many sessions were ended.
    func fenceLapsedHolder(_ name: String, claimant: String, idleLongerThan: TimeInterval, now: Date) async throws -> Int
}

/// The plans a broker runs and the lease among brokers.
public typealias PlanRunBackend = PlanRunRecords & LeaseStore

