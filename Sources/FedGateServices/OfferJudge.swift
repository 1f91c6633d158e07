import FedGateLearning
import FedGatePolicy
import FedGateProto
import FedGateStore
import Foundation
import Synchronization

/// A plan this silo accepted, with its rows restricted to the plan's columns (the label is read
/// separately: training never sees a column the plan did not name) and how their statistics are
/// released (the plan's ranges for these features), both made once per plan.
struct AcceptedPlan: Sendable {
    let plan: TrainingPlan
    let train: Dataset
    let test: Dataset
    /// How the rows' statistics are released; nil for an evaluation plan (it trains nothing, so releases none).
    let statistics: StatisticsRelease?
}

/// Why this silo refused an offer: each reason with the rule that gave it, from the policy (or the
/// judge's own checks: `plan`, `datasets`, `columns`, `approval`) to the reply and the metric label.
struct OfferRefusal: Error, Sendable {
    let refusals: [PlanDecision.Refusal]

    init(_ refusals: [PlanDecision.Refusal]) { self.refusals = refusals }
    init(rule: String, _ reason: String) { self.init([PlanDecision.Refusal(rule: rule, reason: reason)]) }

    /// As the reply carries them: `rule: reason`.
    var reasons: [String] { refusals.map(\.description) }
}

/// Judges each offered plan once against the silo's policy, consent, approvals and data: the plan
/// must be the one offered (its hash), ask for this silo's data set and only columns it has, and
/// pass the policy. The verdict is kept by plan hash, so every later round of an accepted plan trains
/// on the same rows; a plan refused stays refused. A plan refused only for want of a person's approval
/// is asked about again at each offer (the approval alone is read again, the decision is not
/// recorded twice): the broker keeps offering while it waits. Its verdicts are read without waiting
/// (a secure round's keys are advertised in the order the tasks came).
final class OfferJudge: Sendable {
    enum Verdict: Sendable {
        case accepted(AcceptedPlan)
        case refused(OfferRefusal)
        /// Passed the policy but for the approval it requires, which was not given (or not valid) when last asked.
        case awaitingApproval(AcceptedPlan)
    }

    let governor: SiloGovernor
    let dataset: String
    let data: SiloData
    /// Who the audit records of the decisions name.
    let silo: String
    private let verdicts = Mutex<[String: Verdict]>([:])

    init(governor: SiloGovernor, dataset: String, data: SiloData, silo: String) {
        self.governor = governor
        self.dataset = dataset
        self.data = data
        self.silo = silo
    }

    convenience init(governor: SiloGovernor, dataset: String, train: Dataset, test: Dataset, silo: String) {
        self.init(governor: governor, dataset: dataset, data: SiloData(train: train, test: test), silo: silo)
    }

    /// The accepted plan the offer names; `OfferRefusal` when this silo refuses it, or the store's
    /// error when the decision could not be recorded (nothing is kept then: the next offer asks again).
    func accept(_ offer: Fedgate_V1_RoundOffer) async throws -> AcceptedPlan {
        switch verdicts.withLock({ $0[offer.planHash] }) {
        case .accepted(let accepted): return accepted
        case .refused(let refusal): throw refusal
        case .awaitingApproval(let pending): return try await approved(pending)
        case nil: break
        }
        let (plan, train, test, statistics) = try checked(offer)
        let decision = try await governor.decide(plan, actor: silo)
        if decision.outcome == .refused {
            let refusal = OfferRefusal(decision.refusals)
            verdicts.withLock { $0[offer.planHash] = .refused(refusal) }
            throw refusal
        }
        let accepted = AcceptedPlan(plan: plan, train: train, test: test, statistics: statistics)
        if decision.outcome == .needsApproval { return try await approved(accepted) }
        verdicts.withLock { $0[offer.planHash] = .accepted(accepted) }
        return accepted
    }

    static let awaitingApproval = OfferRefusal(rule: "approval", "the plan waits for a person's approval at this silo")

    /// A plan that passed the policy but needs a person's approval: accepted once a valid approval
    /// is recorded, refused by the `approval` rule until then.
    private func approved(_ pending: AcceptedPlan) async throws -> AcceptedPlan {
        let hash = pending.plan.contentHash
        if let governance = governor.ledger.backend as? any GovernanceBackend,
           let approval = try await governance.approval(planHash: hash, silo: governor.policy.silo), approval.allows(at: Date()) {
            verdicts.withLock { $0[hash] = .accepted(pending) }
            return pending
        }
        verdicts.withLock { $0[hash] = .awaitingApproval(pending) }
        throw Self.awaitingApproval
    }

    /// A plan this silo accepted earlier, by hash (nil: never offered, or refused).
    func accepted(_ planHash: String) -> AcceptedPlan? {
        guard case .accepted(let accepted)? = verdicts.withLock({ $0[planHash] }) else { return nil }
        return accepted
    }

    /// The offered text as a plan that is the one offered, for this silo's data set, on columns
    /// this silo has: with its training and test rows restricted to them (`SiloData.rows(for:)`),
    /// and the release of their statistics (the plan must give a range for each of them).
    private func checked(_ offer: Fedgate_V1_RoundOffer) throws -> (TrainingPlan, Dataset, Dataset, StatisticsRelease?) {
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(offer.planYaml, file: "plan \(offer.planHash.prefix(12))") } catch {
            throw OfferRefusal(rule: "plan", "\(error)")
        }
        guard plan.contentHash == offer.planHash else {
            throw OfferRefusal(rule: "plan", "its content hashes to \(plan.contentHash.prefix(12))…, not the offered \(offer.planHash.prefix(12))…")
        }
        guard plan.datasets.contains(dataset) else {
            throw OfferRefusal(rule: "datasets", "this gateway serves '\(dataset)', the plan asks for \(plan.datasets)")
        }
        let (train, test) = try data.rows(for: plan)
        if plan.isEvaluation { return (plan, train, test, nil) }
        do { return (plan, train, test, try plan.statisticsRelease(features: train.featureNames)) } catch {
            throw OfferRefusal(rule: "statistics", "\(error)")
        }
    }
}
