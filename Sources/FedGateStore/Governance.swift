import Foundation

/// A silo's decision on a plan, to be stored with the policy version and plan it was made from.
public struct RecordedDecision: Sendable, Equatable {
    public let silo: String
    public let policyHash: String
    public let policyContent: String
    public let planHash: String
    public let planContent: String
    /// `accepted`, `needs_approval` or `refused`.
    public let outcome: String
    public let reasons: [String]
    /// When the outcome is `needs_approval`: how long an approval stays valid once given.
    public let approvalValidHours: Int?
    /// What the silo's policy lets leave without DP (`releases.without_dp`), and its final
    /// evaluation's noise multiplier when it is released with DP: for the compliance report.
    public var releasedWithoutDP: [String] = []
    public var evaluationNoiseMultiplier: Double?

    public init(silo: String, policyHash: String, policyContent: String, planHash: String, planContent: String,
                outcome: String, reasons: [String], approvalValidHours: Int?) {
        self.silo = silo
        self.policyHash = policyHash
        self.policyContent = policyContent
        self.planHash = planHash
        self.planContent = planContent
        self.outcome = outcome
        self.reasons = reasons
        self.approvalValidHours = approvalValidHours
    }

    var auditEvent: AuditEvent.Decision {
        var d = AuditEvent.Decision(silo: silo, policy: policyHash, plan: planHash, outcome: outcome, reasons: reasons)
        (d.releasedWithoutDP, d.evaluationNoiseMultiplier) = (releasedWithoutDP, evaluationNoiseMultiplier)
        return d
    }
}

/// A plan in a silo's approval queue.
public struct Approval: Sendable, Equatable {
    public enum State: String, Sendable { case pending, approved, rejected }
    public let planHash: String
    public let silo: String
    public let policyHash: String
    public let state: State
    public let requestedAt: Date
    public let validHours: Int
    public let decidedBy: String?
    public let decidedAt: Date?

    /// Whether the plan may run at `time`: approved, and the approval not yet expired.
    public func allows(at time: Date) -> Bool {
        guard state == .approved, let at = decidedAt else { return false }
        return time < at.addingTimeInterval(Double(validHours) * 3600)
    }
}

/// Storage of decisions and approvals, on the same backends as the ledger.
public protocol GovernanceBackend: Sendable {
    /// Stores the policy version, the plan and (if it needs approval) a pending approval, and audits
    /// the decision, in one transaction.
    func record(_ decision: RecordedDecision, actor: String, at: Date) async throws
    /// Approves or rejects a pending plan; audited in the same transaction.
    func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws
    func approval(planHash: String, silo: String) async throws -> Approval?
}
