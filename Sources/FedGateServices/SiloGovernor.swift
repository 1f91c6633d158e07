import FedGatePolicy
import FedGatePrivacy
import FedGateStore
import Foundation

/// A silo's judgement of a plan: its policy, its consent registry and what its ledger has already
/// spent, decided by the policy engine and recorded (with the policy and plan texts) in its store.
public struct SiloGovernor: Sendable {
    public let policy: SiloPolicy
    public let policyText: String
    public let ledger: PrivacyLedger

    public init(policy: SiloPolicy, policyText: String, ledger: PrivacyLedger) {
        self.policy = policy
        self.policyText = policyText
        self.ledger = ledger
    }

    /// Decides `plan` now and records the decision; refused by the engine or not, the decision is returned.
    public func decide(_ plan: TrainingPlan, actor: String, now: Date = Date()) async throws -> PlanDecision {
        var prior: [String: (window: [DPEvent], lifetime: [DPEvent])] = [:]
        var consented: [String: Set<String>] = [:]
        for d in plan.datasets {
            let active = try await ledger.backend.entries(dataset: d).filter { $0.state != .released }
            let days = policy.datasets[d]?.caps.window?.days ?? 0
            prior[d] = (active.filter { $0.createdAt >= now.addingTimeInterval(-Double(days) * 86_400) }.map(\.event), active.map(\.event))
            consented[d] = consentedPurposes(try await ledger.backend.consents(dataset: d), at: now)
        }
        let decision = PolicyEngine.decide(DecisionContext(policy: policy, plan: plan, now: now, priorEvents: prior, consentedPurposes: consented))
        if let governance = ledger.backend as? any GovernanceBackend {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var record = RecordedDecision(
                silo: policy.silo, policyHash: policy.sha256, policyContent: policyText,
                planHash: plan.contentHash, planContent: String(decoding: try encoder.encode(plan), as: UTF8.self),
                outcome: decision.outcome.rawValue, reasons: decision.refusals.map(\.description),
                approvalValidHours: decision.approvalExpiryHours)
            record.releasedWithoutDP = policy.releasedWithoutDP.sorted().map(\.rawValue)
            // The final evaluation with DP only when it is not released exactly.
            record.evaluationNoiseMultiplier = policy.allows(.finalEvaluation) ? nil : policy.evaluationNoiseMultiplier
            try await governance.record(record, actor: actor, at: now)
        }
        return decision
    }
}
