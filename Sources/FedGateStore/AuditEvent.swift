import Foundation

/// What an audit record says happened: one case per kind of decision or change, each with a typed
/// payload. Every writer builds one of these and every reader (exports, the compliance report, the
/// ledger replay) reads one back, so a record's action and its fields cannot drift apart, and a
/// record that does not read back is named as such instead of turning into zeros.
///
/// The stored form is unchanged: the action text (`ledger.reserve`, `round.committed`, …) and the
/// payload as canonical JSON (sorted keys, snake_case names), which the chain's hash covers.
public enum AuditEvent: Sendable, Equatable {
    // The privacy-budget ledger and consent.
    case budgetSet(Budget)
    case budgetReserved(Reservation)
    /// `ledger.commit` or `ledger.release`, by the settlement's state.
    case budgetSettled(Settlement)
    case consentAdded(Consent)
    case consentWithdrawn(ConsentWithdrawal)
    // Governance at a silo.
    case policyDecision(Decision)
    /// `plan.approve` or `plan.reject`.
    case planApproval(approved: Bool, Approval)
    // Parties and certificates.
    case partyEnrolled(Enrolment)
    case enrolmentRedeemed(Enrolment)
    case enrolmentInvited(Invitation)
    case partyRevoked
    case revoked(Revocation)
    case certificateRenewed(Renewal)
    // Plans and rounds at the broker.
    case planSubmitted(PlanSubmission)
    /// `plan.finished`, `plan.failed` or `plan.cancelled` (the run's end), or `plan.running`.
    case planEnded(PlanRun.State, PlanEnd)
    case planCancelled(PlanCancellation)
    case planResumed(PlanResumption)
    /// `plan.await_approval`: the plan waits for approvals before its first round.
    case planAwaitingApproval(ApprovalAwaited)
    case roundPlanned(RoundOpening)
    /// `round.offered` … `round.committed`, `round.aborted`: the round record's transitions.
    case roundAdvanced(RoundRecord.State, RoundTransition)
    /// `round.abort`: why the broker gave a round up.
    case roundAbandoned(RoundAbandonment)
    /// `round.traffic`: a committed round's update bytes against float32's.
    case roundTraffic(RoundTraffic)
    case leaseTaken(Lease)
    // Models.
    case modelVersioned(Version)
    case modelGated(Gate)
    case modelPulled(Pull)
    case modelRolledBack(Rollback)
    /// Every refusal of a connection, call, upload, reply or enrolment.
    case refused(Refusal.Kind, Refusal)
    /// A silo's update left out of a round as a likely attack, and a silo flagged round after round.
    case attackFlagged(AttackFlagged)
    case attackAlert(AttackAlert)
    /// A silo's statistics release for a plan (`statistics.release`, subject: the plan's hash): what
    /// left, after its DP event was committed.
    case statisticsReleased(StatisticsReleased)
    /// A statistics plan's pooled figures (`statistics.pooled`, subject: the plan's hash).
    case statisticsPooled(StatisticsPooled)
    // Deployments of registry versions to silos, their monitoring, alerts and rollbacks.
    case deploymentStarted(DeploymentStarted)
    case deploymentAnswered(DeploymentAnswered)
    case monitorChecked(MonitorChecked)
    case deploymentAlert(DeploymentAlert)
    case deploymentRolledBack(DeploymentRolledBack)
    /// An action this build does not know (written by a newer FedGate, or a note): kept as stored.
    case other(action: String, payload: String)

    /// The record's action text.
    public var action: String {
        switch self {
        case .budgetSet: "ledger.budget"
        case .budgetReserved: "ledger.reserve"
        case .budgetSettled(let s): s.state == .committed ? "ledger.commit" : "ledger.release"
        case .consentAdded: "consent.add"
        case .consentWithdrawn: "consent.withdraw"
        case .policyDecision: "policy.decision"
        case .planApproval(let approved, _): approved ? "plan.approve" : "plan.reject"
        case .partyEnrolled: "party.enroll"
        case .enrolmentRedeemed: "enrolment.redeem"
        case .enrolmentInvited: "enrolment.invite"
        case .partyRevoked: "party.revoke"
        case .revoked(let r): r.kind == "identity" ? "identity.revoke" : "certificate.revoke"
        case .certificateRenewed: "certificate.renew"
        case .planSubmitted: "plan.submit"
        case .planEnded(let state, _): "plan.\(state.rawValue)"
        case .planCancelled: "plan.cancel"
        case .planResumed: "plan.resume"
        case .planAwaitingApproval: "plan.await_approval"
        case .roundPlanned: "round.planned"
        case .roundAdvanced(let state, _): "round.\(state.rawValue)"
        case .roundAbandoned: "round.abort"
        case .roundTraffic: "round.traffic"
        case .leaseTaken: "broker.lease"
        case .modelVersioned: "model.version"
        case .modelGated: "model.gate"
        case .modelPulled: "model.pull"
        case .modelRolledBack: "model.rollback"
        case .refused(let kind, _): kind.rawValue
        case .attackFlagged: "attack.flag"
        case .attackAlert: "attack.alert"
        case .statisticsReleased: "statistics.release"
        case .statisticsPooled: "statistics.pooled"
        case .deploymentStarted: "deploy.start"
        case .deploymentAnswered: "deploy.answer"
        case .monitorChecked: "monitor.check"
        case .deploymentAlert: "deploy.alert"
        case .deploymentRolledBack: "deploy.rolled_back"
        case .other(let action, _): action
        }
    }

    /// The record's payload: canonical JSON of the case's fields.
    public var payload: String {
        switch self {
        case .budgetSet(let p): Self.json(p)
        case .budgetReserved(let p): Self.json(p)
        case .budgetSettled(let p): Self.json(p)
        case .consentAdded(let p): Self.json(p)
        case .consentWithdrawn(let p): Self.json(p)
        case .policyDecision(let p): Self.json(p)
        case .planApproval(_, let p): Self.json(p)
        case .partyEnrolled(let p), .enrolmentRedeemed(let p): Self.json(p)
        case .enrolmentInvited(let p): Self.json(p)
        case .partyRevoked: "{}"
        case .revoked(let p): Self.json(p)
        case .certificateRenewed(let p): Self.json(p)
        case .planSubmitted(let p): Self.json(p)
        case .planEnded(_, let p): Self.json(p)
        case .planCancelled(let p): Self.json(p)
        case .planResumed(let p): Self.json(p)
        case .planAwaitingApproval(let p): Self.json(p)
        case .roundPlanned(let p): Self.json(p)
        case .roundAdvanced(_, let p): Self.json(p)
        case .roundAbandoned(let p): Self.json(p)
        case .roundTraffic(let p): Self.json(p)
        case .leaseTaken(let p): Self.json(p)
        case .modelVersioned(let p): Self.json(p)
        case .modelGated(let p): Self.json(p)
        case .modelPulled(let p): Self.json(p)
        case .modelRolledBack(let p): Self.json(p)
        case .refused(_, let p): Self.json(p)
        case .attackFlagged(let p): Self.json(p)
        case .attackAlert(let p): Self.json(p)
        case .statisticsReleased(let p): Self.json(p)
        case .statisticsPooled(let p): Self.json(p)
        case .deploymentStarted(let p): Self.json(p)
        case .deploymentAnswered(let p): Self.json(p)
        case .monitorChecked(let p): Self.json(p)
        case .deploymentAlert(let p): Self.json(p)
        case .deploymentRolledBack(let p): Self.json(p)
        case .other(_, let payload): payload
        }
    }

    /// Reads a stored record back. Throws `AuditEventError` naming the record's action and what is
    /// wrong when a known action's payload lacks a field or holds the wrong type.
    public init(action: String, payload: String) throws {
        let read = PayloadReader(action: action, data: Data(payload.utf8))
        if let kind = Refusal.Kind(rawValue: action) {
            self = .refused(kind, try read(Refusal.self))
            return
        }
        if let decoded = try Self.ledgerOrParty(action, read) ?? Self.planOrModel(action, read) ?? Self.deployment(action, read) {
            // `ledger.commit` whose fields say released, and the like.
            guard decoded.action == action else {
                throw AuditEventError(action: action, problem: "its fields describe '\(decoded.action)'")
            }
            self = decoded
        } else {
            self = .other(action: action, payload: payload)
        }
    }

    /// The record's event, or what keeps it from being read.
    public static func of(_ record: AuditRecord) -> Result<AuditEvent, AuditEventError> {
        Result { try AuditEvent(action: record.action, payload: record.payload) }.mapError { error in
            (error as? AuditEventError) ?? AuditEventError(action: record.action, problem: "\(error)")
        }
    }

    /// Decodes a payload as one case's fields, naming the action when it does not fit.
    private struct PayloadReader {
        let action: String
        let data: Data

        func callAsFunction<P: Decodable>(_ type: P.Type) throws -> P {
            do { return try JSONDecoder().decode(P.self, from: data) } catch {
                throw AuditEventError(action: action, problem: AuditEventError.describe(error))
            }
        }
    }

    private static func ledgerOrParty(_ action: String, _ read: PayloadReader) throws -> AuditEvent? {
        switch action {
        case "ledger.budget": return .budgetSet(try read(Budget.self))
        case "ledger.reserve": return .budgetReserved(try read(Reservation.self))
        case "ledger.commit", "ledger.release": return .budgetSettled(try read(Settlement.self))
        case "consent.add": return .consentAdded(try read(Consent.self))
        case "consent.withdraw": return .consentWithdrawn(try read(ConsentWithdrawal.self))
        case "policy.decision": return .policyDecision(try read(Decision.self))
        case "plan.approve", "plan.reject": return .planApproval(approved: action == "plan.approve", try read(Approval.self))
        case "party.enroll": return .partyEnrolled(try read(Enrolment.self))
        case "enrolment.redeem": return .enrolmentRedeemed(try read(Enrolment.self))
        case "enrolment.invite": return .enrolmentInvited(try read(Invitation.self))
        case "party.revoke": return .partyRevoked
        case "identity.revoke", "certificate.revoke": return .revoked(try read(Revocation.self))
        case "certificate.renew": return .certificateRenewed(try read(Renewal.self))
        case "broker.lease": return .leaseTaken(try read(Lease.self))
        default: return nil
        }
    }

    private static func planOrModel(_ action: String, _ read: PayloadReader) throws -> AuditEvent? {
        switch action {
        case "plan.submit": return .planSubmitted(try read(PlanSubmission.self))
        case "plan.cancel": return .planCancelled(try read(PlanCancellation.self))
        case "plan.resume": return .planResumed(try read(PlanResumption.self))
        case "plan.await_approval": return .planAwaitingApproval(try read(ApprovalAwaited.self))
        case "round.planned": return .roundPlanned(try read(RoundOpening.self))
        case "round.abort": return .roundAbandoned(try read(RoundAbandonment.self))
        case "round.traffic": return .roundTraffic(try read(RoundTraffic.self))
        case "model.version": return .modelVersioned(try read(Version.self))
        case "model.gate": return .modelGated(try read(Gate.self))
        case "model.pull": return .modelPulled(try read(Pull.self))
        case "model.rollback": return .modelRolledBack(try read(Rollback.self))
        case "statistics.release": return .statisticsReleased(try read(StatisticsReleased.self))
        case "statistics.pooled": return .statisticsPooled(try read(StatisticsPooled.self))
        case "attack.flag": return .attackFlagged(try read(AttackFlagged.self))
        case "attack.alert": return .attackAlert(try read(AttackAlert.self))
        default: break
        }
        if action.hasPrefix("plan."), let state = PlanRun.State(rawValue: String(action.dropFirst(5))) {
            return .planEnded(state, try read(PlanEnd.self))
        }
        if action.hasPrefix("round."), let state = RoundRecord.State(rawValue: String(action.dropFirst(6))) {
            return .roundAdvanced(state, try read(RoundTransition.self))
        }
        return nil
    }

    private static func deployment(_ action: String, _ read: PayloadReader) throws -> AuditEvent? {
        switch action {
        case "deploy.start": return .deploymentStarted(try read(DeploymentStarted.self))
        case "deploy.answer": return .deploymentAnswered(try read(DeploymentAnswered.self))
        case "monitor.check": return .monitorChecked(try read(MonitorChecked.self))
        case "deploy.alert": return .deploymentAlert(try read(DeploymentAlert.self))
        case "deploy.rolled_back": return .deploymentRolledBack(try read(DeploymentRolledBack.self))
        default: return nil
        }
    }

    static func json<P: Encodable>(_ value: P) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every payload is plain strings, numbers, booleans, arrays and maps: encoding cannot fail.
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

/// A stored audit record that does not read back as the event its action names.
public struct AuditEventError: Error, Sendable, Equatable, CustomStringConvertible {
    public let action: String
    public let problem: String

    public var description: String { "an audit record '\(action)' does not read back: \(problem)" }

    static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case .keyNotFound(let key, let c)?: return "field '\(path(c.codingPath + [key]))' is missing"
        case .typeMismatch(let type, let c)?: return "field '\(path(c.codingPath))' is not \(type)"
        case .valueNotFound(let type, let c)?: return "field '\(path(c.codingPath))' is null, not \(type)"
        case .dataCorrupted(let c)?: return c.codingPath.isEmpty ? "the payload is not a JSON object" : "field '\(path(c.codingPath))' is unreadable"
        default: return "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
}
