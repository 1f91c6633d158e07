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

/// Offers: each plan judged once (`OfferJudge`), and each round's budget reserved (`BudgetReservations`).
extension Gateway {
    /// Answers an offer: accepted with the plan's feature moments and the round's budget reserved,
    /// or refused with each reason and the rule that gave it. The answer to an admission offer
    /// (round 0) releases only the decision: no moments, nothing reserved.
    func answer(_ offer: Fedgate_V1_RoundOffer) async -> Fedgate_V1_OfferReply {
        var reply = Fedgate_V1_OfferReply()
        reply.planHash = offer.planHash
        reply.round = offer.round
        do {
            let accepted = try await judge.accept(offer)
            // Round 0 asks whether the plan may begin (the broker's admission offer): judged like a
            // round's offer, with nothing reserved and no moments sent.
            if offer.round == 0 {
                reply.accepted = true
                return reply
            }
            try await reservations.reserve(RoundKey(offer.planHash, offer.round), try accepted.plan.roundEvent(), datasets: accepted.plan.datasets)
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
            let refusal = error as? OfferRefusal ?? OfferRefusal(rule: "other", "\(error)")
            reply.accepted = false
            reply.reasons = refusal.reasons
            // The admission offer is asked again while the broker waits for approvals: the refusals
            // of the plan's rounds are the ones counted.
            guard offer.round > 0 else { return reply }
            activity.offersRefused.append(contentsOf: reply.reasons)
            metrics.count("fedgate_offers_total", [("decision", "refused")])
            for r in refusal.refusals { metrics.count("fedgate_policy_refusals_total", [("rule", FedGateMetrics.label(rule: r.rule))]) }
            logger.notice("offer refused", metadata: ["silo": "\(siloID)", "round": "\(offer.round)", "reasons": "\(reply.reasons)"])
        }
        return reply
    }
}
