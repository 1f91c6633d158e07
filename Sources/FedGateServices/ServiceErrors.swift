import Foundation

/// What the broker refuses about plans and rounds as a whole (a silo's message that does not fit
/// the round is a `RoundRefusal`). `ErrorStatus` gives each case its RPC status.
public enum BrokerError: Error, Sendable, Equatable, CustomStringConvertible {
    case planAlreadyRunning(plan: String)
    case unknownPlan(plan: String)
    case notAskedToEvaluate(silo: String, plan: String)
    case roundNotTraining(plan: String, round: Int)
    /// A stored checkpoint that cannot be used to resume (`problem`: what is wrong with it).
    case checkpointUnusable(plan: String, round: Int, problem: String)
    /// The silos whose approval would have made the quorum did not give it before the plan's deadline.
    case approvalsNotGiven(plan: String, reason: String)
    /// No round of the plan committed: it has no model (`last`: why its last round aborted).
    case everyRoundAborted(plan: String, last: String)
    /// A deployment refused (the registry, the model, the rollout's rules).
    case deployment(String)

    public var description: String {
        switch self {
        case .planAlreadyRunning(let plan): "plan \(plan.prefix(12))… is already running"
        case .unknownPlan(let plan): "no plan \(plan.prefix(12))… at this broker"
        case .notAskedToEvaluate(let silo, let plan): "\(silo) is not asked to evaluate plan \(plan.prefix(12))…"
        case .roundNotTraining(let plan, let round): "round \(round) of plan \(plan.prefix(12))… is not training"
        case .checkpointUnusable(let plan, let round, let problem): "plan \(plan.prefix(12))…: the checkpoint of round \(round) \(problem)"
        case .approvalsNotGiven(_, let reason): reason
        case .everyRoundAborted(_, let last): "every round aborted, so the plan has no model (the last: \(last))"
        case .deployment(let reason): reason
        }
    }
}

/// A gateway's own failures in a round or its link: logged at the silo, never sent anywhere.
public enum GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A task, evaluation or secure-aggregation step for a plan this gateway did not accept.
    case unacceptedPlan(plan: String, asked: String)
    case standardisationMismatch(consortium: Int, silo: Int)
    /// A regression task without the consortium's target standardisation (a finite mean, a positive scale).
    case targetStandardisationMissing(plan: String)
    /// The silo's policy releases no final evaluation (exactly or with DP).
    case evaluationNotReleased(regression: Bool)
    case noProgram(executor: String)
    case brokerRefused(what: String, reason: String)
    case modelDigestMismatch(round: UInt32)
    case noWelcome(broker: String, within: Duration)
    case renewalMismatch(identity: String, notAfter: Date)
    /// Every broker refused this gateway's certificate at the handshake, `attempts` times in a row.
    case certificateRefused(silo: String, notAfter: Date, attempts: Int)
    /// The broker's software is not pinned by this silo's policy, or this gateway's by the broker's config.
    case versionRefused(reason: String)
    /// A deployment this silo could not install or monitor (the reason goes back to the broker).
    case deployment(version: Int, problem: String)

    public var description: String {
        switch self {
        case .unacceptedPlan(let plan, let asked): "\(asked) for plan \(plan.prefix(12))… this gateway never accepted"
        case .standardisationMismatch(let consortium, let silo): "the consortium standardisation has \(consortium) features, this silo \(silo)"
        case .evaluationNotReleased(true): "this silo's policy does not release a final evaluation exactly (releases.without_dp lacks final_evaluation), and a regression's evaluation with DP is not built: the silo does not report one"
        case .evaluationNotReleased(false): "this silo's policy does not release a final evaluation exactly (releases.without_dp lacks final_evaluation) and gives no releases.evaluation_noise_multiplier for one with DP: the silo does not report one"
        case .targetStandardisationMissing(let plan): "plan \(plan.prefix(12)): the task for a regression target carries no target standardisation (a finite mean, a positive scale); is the broker older than this gateway?"
        case .noProgram(let executor): "the policy names no program for executor '\(executor)'"
        case .brokerRefused(let what, let reason): "the broker refused the \(what): \(reason)"
        case .modelDigestMismatch(let round): "the model's SHA-256 differs from the one announced for round \(round)"
        case .noWelcome(let broker, let within):
            "no welcome from the broker at \(broker) within \(within): it accepted the connection but does not answer "
                + "(frozen, overloaded, or the network drops the handshake); trying the next broker"
        case .renewalMismatch(let identity, let notAfter):
            "the broker returned a certificate for \(identity) until \(notAfter); keeping the current one"
        case .certificateRefused(let silo, let notAfter, let attempts):
            "the broker refused this gateway's certificate (silo \(silo), valid until \(notAfter)) at \(attempts) handshakes in a row: "
                + "the consortium operator revoked it (the broker's audit trail records by whom) or never enrolled this silo. "
                + "Ask the operator; with a new certificate (fedgate gateway enroll) start the gateway again"
        case .versionRefused(let reason): "software versions do not match: \(reason)"
        case .deployment(let version, let problem): "version \(version): \(problem)"
        }
    }
}

/// A service that cannot start as configured.
public enum ServiceSetupError: Error, Sendable, Equatable, CustomStringConvertible {
    case noListeningPort(listener: String)
    case enrolmentNeedsCA

    public var description: String {
        switch self {
        case .noListeningPort(let listener): "the \(listener) listener has no port to listen on"
        case .enrolmentNeedsCA: "enrolment by token needs the broker to hold the CA (issuing)"
        }
    }
}
