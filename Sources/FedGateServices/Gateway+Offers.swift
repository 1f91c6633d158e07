import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// Offers: each judged once per plan against the silo's policy, consent and ledger, and its budget reserved.
extension Gateway {
    /// Judges an offer: the policy decides the plan once, the ledger reserves every round.
    func answer(_ offer: Fedgate_V1_RoundOffer) async -> Fedgate_V1_OfferReply {
        var reply = Fedgate_V1_OfferReply()
        reply.planHash = offer.planHash
        reply.round = offer.round
        do {
            let accepted = try await decide(offer)
            let plan = accepted.plan
            let key = RoundKey(offer.planHash, offer.round)
            if reservations[key] == nil {
                let event = try plan.roundEvent()
                var ids: [String] = []
                do {
                    for d in plan.datasets {
                        ids.append(try await governor.ledger.reserve(event, dataset: d, plan: offer.planHash, round: Int(offer.round), actor: siloID))
                    }
                } catch {
                    for id in ids { try? await governor.ledger.release(id, actor: siloID) }
                    throw error
                }
                reservations[key] = ids
            }
            await crashPoint("reserved")
            let m = accepted.moments
            reply.accepted = true
            reply.moments.count = UInt64(m.count)
            reply.moments.sums = m.sums
            reply.moments.squares = m.squares
            reply.moments.classes = UInt32(m.classes)
            activity.offersAccepted += 1
            metrics.count("fedgate_offers_total", [("decision", "accepted")])
        } catch {
            reply.accepted = false
            reply.reasons = (error as? OfferRefusal)?.reasons ?? ["\(error)"]
            activity.offersRefused.append(contentsOf: reply.reasons)
            metrics.count("fedgate_offers_total", [("decision", "refused")])
            for reason in reply.reasons { metrics.count("fedgate_policy_refusals_total", [("rule", FedGateMetrics.rule(of: reason))]) }
            logger.notice("offer refused", metadata: ["silo": "\(siloID)", "round": "\(offer.round)", "reasons": "\(reply.reasons)"])
        }
        return reply
    }

    struct OfferRefusal: Error { let reasons: [String] }

    func decide(_ offer: Fedgate_V1_RoundOffer) async throws -> AcceptedPlan {
        switch decisions[offer.planHash] {
        case .accepted(let accepted): return accepted
        case .refused(let reasons): throw OfferRefusal(reasons: reasons)
        case nil: break
        }
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(offer.planYaml, file: "plan \(offer.planHash.prefix(12))") } catch {
            throw OfferRefusal(reasons: ["plan: \(error)"])
        }
        guard plan.contentHash == offer.planHash else {
            throw OfferRefusal(reasons: ["plan: its content hashes to \(plan.contentHash.prefix(12))…, not the offered \(offer.planHash.prefix(12))…"])
        }
        guard plan.datasets.contains(settings.dataset) else {
            throw OfferRefusal(reasons: ["datasets: this gateway serves '\(settings.dataset)', the plan asks for \(plan.datasets)"])
        }
        let names = plan.columns.filter { $0 != settings.train.labelName }
        let train: Dataset, test: Dataset
        do { (train, test) = (try settings.train.selecting(features: names), try settings.test.selecting(features: names)) } catch {
            throw OfferRefusal(reasons: ["columns: \(error)"])
        }
        let decision = try await governor.decide(plan, actor: siloID)
        var refusals: [String]
        switch decision.outcome {
        case .accepted: refusals = []
        case .refused: refusals = decision.refusals.map { "\($0.rule): \($0.reason)" }
        case .needsApproval:
            refusals = ["approval: the plan waits for a person's approval at this silo"]
            if let governance = governor.ledger.backend as? any GovernanceBackend,
               let approval = try await governance.approval(planHash: plan.contentHash, silo: governor.policy.silo), approval.allows(at: Date()) {
                refusals = []
            }
        }
        guard refusals.isEmpty else {
            decisions[offer.planHash] = .refused(refusals)
            throw OfferRefusal(reasons: refusals)
        }
        let accepted = AcceptedPlan(plan: plan, train: train, test: test, moments: Standardisation.Moments(of: train))
        decisions[offer.planHash] = .accepted(accepted)
        return accepted
    }
}
