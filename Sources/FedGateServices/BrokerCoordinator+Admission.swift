import FedGatePolicy
import FedGatePKI
import FedGateProto
import FedGateRounds
import FedGateStore
import Foundation

/// Before a plan's first round: may it begin? Every silo serving its data sets gets an admission
/// offer (round 0), judged as a round's offer is, with nothing reserved and no moments sent. When
/// too few accept but the silos waiting for a person's approval would make the quorum, the plan
/// waits (shown in its status, audited as `plan.await_approval`) and asks again every
/// `approvalPoll`, until the quorum is approved or the plan's approval deadline passes; then it fails
/// with the reason. `PlanAdmission` decides; this only asks and waits.
extension BrokerCoordinator {
    struct Admitting {
        /// The silos asked by the admission offer in flight (a silo whose stream ends is struck off).
        var asked: Set<String>
        var answers: [String: PlanAdmission.Answer] = [:]
        var refused: [String: [String]] = [:]
        /// A statistics plan's releases, which come with the silos' acceptances.
        var releases: [String: Fedgate_V1_FeatureMoments] = [:]
        /// The silos whose approval the plan waits for (empty until it first waits).
        var awaited: [String] = []
        let rule: PlanAdmission

        var isComplete: Bool { rule.canDecide(asked: asked, answers: answers) }
    }

    /// A silo's answer to a plan's admission offer.
    func admitted(_ reply: Fedgate_V1_OfferReply, from silo: String) {
        let hash = reply.planHash
        guard admissions[hash]?.asked.contains(silo) == true else {
            logger.warning("answer to an admission offer that is not open", metadata: ["silo": "\(silo)", "plan": "\(PeerText.bounded(hash.prefix(12)))"])
            return
        }
        let reasons = PeerText.bounded(reply.reasons)
        admissions[hash]!.answers[silo] = PlanAdmission.answer(accepted: reply.accepted, reasons: reasons)
        admissions[hash]!.refused[silo] = reply.accepted ? nil : reasons
        if reply.accepted, reply.hasMoments { admissions[hash]!.releases[silo] = reply.moments }
        wakeIfDone(hash)
    }

    /// Returns once the plan may begin its rounds, with the silos that accepted it; throws
    /// `BrokerError.approvalsNotGiven` when the approvals it waited for did not come before its deadline.
    @discardableResult
    func admit(_ plan: TrainingPlan, text: String, hash: String) async throws -> (accepted: [String], releases: [String: Fedgate_V1_FeatureMoments]) {
        let wait = Double(plan.approvalWaitSeconds ?? TrainingPlan.defaultApprovalWaitSeconds)
        let rule = PlanAdmission(quorum: plan.quorum, waitUntil: now().addingTimeInterval(wait))
        defer { admissions.removeValue(forKey: hash) }
        var announced: [String] = []
        while true {
            let eligible = await eligibleSilos(for: plan)
            try Task.checkCancellation()
            admissions[hash] = Admitting(asked: Set(eligible), releases: admissions[hash]?.releases ?? [:], awaited: admissions[hash]?.awaited ?? [],
                                         rule: rule)
            let window = offerWindow(plan)
            sendOffer(hash, round: 0, text: text, deadline: now().addingTimeInterval(Double(window.milliseconds) / 1000), to: eligible,
                      wantsStatistics: plan.isStatistics)
            await waitForRound(hash, until: ContinuousClock.now + window)
            try Task.checkCancellation()
            let answers = admissions[hash]!.answers
            switch rule.decide(answers, at: now()) {
            case .begin, .beginShort:
                let accepted = PlanAdmission.accepted(answers)
                return (accepted, admissions[hash]!.releases.filter { accepted.contains($0.key) })
            case .giveUp(let reason):
                throw BrokerError.approvalsNotGiven(plan: hash, reason: reason)
            case .wait(let silos):
                admissions[hash]!.awaited = silos
                if silos != announced {
                    announced = silos
                    let accepted = PlanAdmission.accepted(answers)
                    try await runStore.audit(.planAwaitingApproval(.init(silos: silos, accepted: accepted, until: rule.waitUntil.timeIntervalSince1970)),
                                             actor: settings.brokerID, subject: hash, at: now())
                    logger.notice("plan waits for approval", metadata: ["plan": "\(hash.prefix(12))", "at": "\(silos)", "accepted": "\(accepted)",
                                                                         "until": "\(rule.waitUntil)"])
                }
                try await Task.sleep(for: settings.approvalPoll)
            }
        }
    }

    /// Where an admission stands, for the plan's status: asking, or waiting for these silos' approval.
    func admissionStatus(_ hash: String) -> (round: Int, phase: String, accepted: [String], refused: [String: [String]])? {
        guard let a = admissions[hash] else { return nil }
        return (0, a.awaited.isEmpty ? "admitting" : "awaiting approval", PlanAdmission.accepted(a.answers), a.refused)
    }
}
