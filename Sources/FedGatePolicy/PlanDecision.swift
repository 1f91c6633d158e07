import FedGatePrivacy
import Foundation

/// Everything a rule may look at: the silo's policy, the plan, the time, and the privacy already
/// spent or reserved per data set (from the ledger; empty when checking offline).
public struct DecisionContext: Sendable {
    public let policy: SiloPolicy
    public let plan: TrainingPlan
    public let now: Date
    /// Events already committed or reserved per data set: inside the policy's rolling window, and ever.
    public let priorEvents: [String: (window: [DPEvent], lifetime: [DPEvent])]
    /// Purposes the consent registry covers at `now`, per data set; nil when checking offline
    /// (then only the policy's purposes apply).
    public let consentedPurposes: [String: Set<String>]?
    /// The plan's projected spend per silo (nil if its DP settings are unusable).
    public let projected: DPEvent?

    public init(policy: SiloPolicy, plan: TrainingPlan, now: Date = Date(),
                priorEvents: [String: (window: [DPEvent], lifetime: [DPEvent])] = [:],
                consentedPurposes: [String: Set<String>]? = nil) {
        self.policy = policy
        self.plan = plan
        self.now = now
        self.priorEvents = priorEvents
        self.consentedPurposes = consentedPurposes
        projected = plan.isEvaluation ? Self.evaluationEvent(policy) : plan.isStatistics ? plan.statisticsEvent : try? plan.projectedEvent()
    }

    /// What an evaluation plan spends at this silo: nothing when its policy releases the final
    /// evaluation exactly, else one noisy-count release (`EvaluationRelease`), else nothing leaves
    /// (the `releases` rule refuses such a plan).
    static func evaluationEvent(_ policy: SiloPolicy) -> DPEvent {
        if policy.allows(.finalEvaluation) { return .noOp }
        return policy.evaluationNoiseMultiplier.map { DPEvent.gaussian(noiseMultiplier: $0) } ?? .noOp
    }

    /// ε of prior events plus the plan's, at the plan's δ or the one given (∞ when it cannot be computed).
    func epsilon(with prior: [DPEvent], delta: Double? = nil) -> Double {
        guard let projected else { return .infinity }
        return (try? FedGatePrivacy.epsilon(of: .composed(prior + [projected]), delta: delta ?? plan.dp.delta)) ?? .infinity
    }
}

/// One small rule of a silo's policy: it passes, or returns every reason it fails.
public protocol PlanRule: Sendable {
    var name: String { get }
    func check(_ context: DecisionContext) -> [String]
}

/// The outcome of a plan against a policy, with every failing rule and its reason.
public struct PlanDecision: Sendable, CustomStringConvertible {
    public enum Outcome: String, Sendable { case accepted, needsApproval = "needs_approval", refused }

    public struct Refusal: Sendable, Equatable, CustomStringConvertible {
        public let rule: String
        public let reason: String
        public init(rule: String, reason: String) {
            self.rule = rule
            self.reason = reason
        }
        /// `rule: reason`, as replies, audit records and reports carry it.
        public var description: String { "\(rule): \(reason)" }
    }

    public let outcome: Outcome
    public let refusals: [Refusal]
    /// ε per data set the plan would spend (at the plan's δ), before any training.
    public let projectedEpsilon: Double?
    public let planHash: String
    public let policyHash: String
    /// Hours an approval stays valid, when one is needed.
    public let approvalExpiryHours: Int?

    public var description: String {
        var lines = ["plan \(planHash.prefix(16))… against policy \(policyHash.prefix(16))…: \(outcome.rawValue.replacingOccurrences(of: "_", with: " "))"]
        if let e = projectedEpsilon { lines.append(String(format: "  projected ε per data set: %.4f", e)) }
        for r in refusals { lines.append("  ✗ \(r)") }
        if outcome == .needsApproval, let h = approvalExpiryHours {
            lines.append("  waits for a person's approval of plan \(planHash), valid \(h) h once given")
        }
        return lines.joined(separator: "\n")
    }
}

/// Decides a plan against a policy by running every rule (not stopping at the first failure).
public enum PolicyEngine {
    public static let rules: [any PlanRule] = [
        KnownDatasets(), PurposeAllowed(), PurposeConsented(), ColumnsAllowed(), ResidencyAllowed(), NoiseAtLeast(), ClipAtMost(),
        DeltaAtMost(), EpsilonCaps(), SecureAggregationRequired(), QuorumAtLeast(), ModelAllowed(), LabelClassesReleased(),
        ExecutorAllowed(), HoursAllowed(), CompressionAllowed(), StatisticsNoiseAtLeast(), EvaluationReleased(), DiscreteNoiseRequired(),
    ]

    public static func decide(_ context: DecisionContext) -> PlanDecision {
        // A plan that trains nothing is not judged by the rules about training.
        let applying = context.plan.trainsNothing ? rules.filter { !($0 is any TrainingRule) } : rules
        let refusals = applying.flatMap { rule in rule.check(context).map { PlanDecision.Refusal(rule: rule.name, reason: $0) } }
        let outcome: PlanDecision.Outcome = !refusals.isEmpty ? .refused : (context.policy.approvalExpiryHours != nil ? .needsApproval : .accepted)
        let projected = context.projected.flatMap { try? epsilon(of: $0, delta: context.plan.dp.delta) }
        return PlanDecision(outcome: outcome, refusals: refusals, projectedEpsilon: projected,
                            planHash: context.plan.contentHash, policyHash: context.policy.sha256,
                            approvalExpiryHours: context.policy.approvalExpiryHours)
    }
}
