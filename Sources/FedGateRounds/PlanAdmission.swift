import Foundation

/// Whether a plan's first round may begin, from the silos' answers to its admission offer (an
/// offer for round 0: each silo judges the plan as it would a round's, reserves nothing and sends
/// no moments). A plan that needs a person's approval at some silos waits for it while those
/// approvals would make its quorum, and fails when the plan's approval deadline passes first.
/// No I/O and no clock: the broker asks again after each admission offer, with the time.
public struct PlanAdmission: Sendable, Equatable {
    /// A silo's answer to the admission offer.
    public enum Answer: Sendable, Equatable {
        case accepted
        /// Refused only because a person at the silo has not approved the plan (yet).
        case awaitingApproval
        /// Refused by the silo's policy, consent or data: waiting changes nothing.
        case refused
    }

    public enum Decision: Sendable, Equatable {
        /// Enough silos accepted: the rounds begin.
        case begin
        /// Too few accepted, but these silos' approvals would make the quorum: ask again later.
        case wait(for: [String])
        /// The approvals did not come before the plan's approval deadline: the plan fails, with this reason.
        case giveUp(String)
        /// Even with every awaited approval the quorum is out of reach among the silos that
        /// answered: the rounds begin anyway, and abort with their own reasons (more silos may connect).
        case beginShort
    }

    public let quorum: Int
    /// When the plan stops waiting for approvals.
    public let waitUntil: Date

    public init(quorum: Int, waitUntil: Date) {
        self.quorum = quorum
        self.waitUntil = waitUntil
    }

    /// The silo's answer as its reasons say it: refused only by the `approval` rule means awaiting
    /// approval (the gateway writes each reason as `rule: reason`).
    public static func answer(accepted: Bool, reasons: [String]) -> Answer {
        if accepted { return .accepted }
        return !reasons.isEmpty && reasons.allSatisfy { $0.hasPrefix("approval: ") } ? .awaitingApproval : .refused
    }

    /// The silos that accepted, in order.
    public static func accepted(_ answers: [String: Answer]) -> [String] {
        answers.filter { $0.value == .accepted }.keys.sorted()
    }

    /// Whether the admission offer can close: everyone asked answered, or a quorum accepted (the
    /// others' answers cannot keep the plan from beginning; a silent silo does not hold it).
    public func canDecide(asked: Set<String>, answers: [String: Answer]) -> Bool {
        asked.isSubset(of: answers.keys) || Self.accepted(answers).count >= quorum
    }

    public func decide(_ answers: [String: Answer], at now: Date) -> Decision {
        let accepted = Self.accepted(answers).count
        if accepted >= quorum { return .begin }
        let awaiting = answers.filter { $0.value == .awaitingApproval }.keys.sorted()
        guard !awaiting.isEmpty, accepted + awaiting.count >= quorum else { return .beginShort }
        guard now < waitUntil else {
            return .giveUp("the plan waited for approval at \(awaiting.joined(separator: ", ")) until its approval deadline "
                           + "(\(accepted) accepted, quorum is \(quorum)); submit it again once they approve it")
        }
        return .wait(for: awaiting)
    }
}
