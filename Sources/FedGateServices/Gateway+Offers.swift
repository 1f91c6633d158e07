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
    /// Answers an offer: accepted with the round's budget reserved (and, when the offer asks, the
    /// plan's statistics release, spent in the ledger before it leaves), or refused with each reason
    /// and the rule that gave it. The answer to an admission offer (round 0) releases only the
    /// decision: no statistics, nothing reserved.
    func answer(_ offer: Fedgate_V1_RoundOffer) async -> Fedgate_V1_OfferReply {
        var reply = Fedgate_V1_OfferReply()
        reply.planHash = offer.planHash
        reply.round = offer.round
        do {
            if activePlans[offer.planHash] == nil, let busy = concurrencyRefusal(offer.planHash, now: Date()) {
                throw OfferRefusal(rule: "concurrency", busy)
            }
            let accepted = try await judge.accept(offer)
            activePlans[offer.planHash] = Date()
            // Round 0 asks whether the plan may begin (the broker's admission offer): judged like a
            // round's offer, with nothing reserved and no statistics sent.
            if offer.round == 0 {
                // A statistics plan's whole release goes with its admission (spent in the ledger first).
                if offer.wantsStatistics, accepted.plan.isStatistics { reply.moments = try await analyticsRelease(accepted, plan: offer.planHash) }
                reply.accepted = true
                return reply
            }
            if let quota = try await quotaRefusal() { throw OfferRefusal(rule: "quota", quota) }
            let key = RoundKey(offer.planHash, offer.round)
            try await reservations.reserve(key, try accepted.plan.roundEvent(), datasets: accepted.plan.datasets)
            await crashPoint("reserved")
            if offer.wantsStatistics {
                do { reply.moments = try await statisticsRelease(accepted, plan: offer.planHash) } catch {
                    await reservations.release(key)
                    throw error
                }
            }
            reply.accepted = true
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

    /// Why the policy's quota refuses another round now (nil: it does not), from this silo's ledger.
    func quotaRefusal() async throws -> String? {
        guard governor.policy.roundsPerDay != nil else { return nil }
        let entries = try await governor.ledger.backend.entries(dataset: settings.dataset).filter { $0.state != .released }
        return governor.policy.quotaRefusal(rounds: entries.map { ($0.planHash, $0.round, $0.createdAt) }, now: Date())
    }

    /// The plan's statistics release: made once per plan while this gateway runs (asked again, the
    /// same values go: repeating them spends nothing), its DP event committed on each of the plan's
    /// data sets before the values exist outside this function. If the ledger refuses (a cap) or
    /// fails, nothing is released.
    func statisticsRelease(_ accepted: AcceptedPlan, plan hash: String) async throws -> Fedgate_V1_FeatureMoments {
        if let made = releasedStatistics[hash] { return made }
        guard let release = accepted.statistics else { throw OfferRefusal(rule: "statistics", "an evaluation plan asks for no statistics release") }
        try await reservations.spend(release.event, plan: hash, datasets: accepted.plan.datasets)
        var noise = releaseNoise()
        let r = release.release(accepted.train, noise: &noise)
        var m = Fedgate_V1_FeatureMoments()
        m.count = r.count
        m.sums = r.sums
        m.squares = r.squares
        // A schema's classes are the plan's; logistic regression has two; otherwise the label's
        // classes are the silo's (the judge refused the plan unless the policy releases them).
        m.classes = UInt32(accepted.plan.schema != nil || governor.policy.allows(.labelClasses) ? r.classes : 2)
        try await released(m, accepted, plan: hash, noiseMultiplier: release.noiseMultiplier)
        return m
    }

    /// The noise a release draws: the CSPRNG's, or in tests the run's repeatable noise (no privacy), one
    /// stream per `stream` (0: the plan's statistics release).
    func releaseNoise(stream: Int = 0) -> GaussianNoiseGenerator {
        settings.fixedNoise.map { RepeatableNoise(run: $0.run, silo: $0.silo, round: stream).noise } ?? GaussianNoiseGenerator()
    }

    /// What left, kept for the plan's later asks and in the silo's own trail (`statistics.release`:
    /// the released count weighs its updates after a restart).
    private func released(_ m: Fedgate_V1_FeatureMoments, _ accepted: AcceptedPlan, plan hash: String, noiseMultiplier: Double) async throws {
        try await governor.ledger.backend.audit(.statisticsReleased(.init(datasets: accepted.plan.datasets, noiseMultiplier: noiseMultiplier,
                                                                          features: m.sums.count, count: m.count)),
                                                actor: siloID, subject: hash, at: Date())
        releasedStatistics[hash] = m
        logger.info("statistics released", metadata: ["silo": "\(siloID)", "plan": "\(hash.prefix(12))", "noise_multiplier": "\(noiseMultiplier)",
                                                     "features": "\(m.sums.count)", "histogram bins": "\(m.bins.count)"])
    }

    /// A statistics plan's release over all this silo's rows (training and held-out): count, sums,
    /// squares and histogram bins with Gaussian noise (`AnalyticsRelease`), made once per plan, its DP
    /// event committed on each of the plan's data sets before the values exist outside this function.
    func analyticsRelease(_ accepted: AcceptedPlan, plan hash: String) async throws -> Fedgate_V1_FeatureMoments {
        if let made = releasedStatistics[hash] { return made }
        let rows = try Dataset(featureNames: accepted.train.featureNames, labelName: accepted.train.labelName,
                               features: accepted.train.features + accepted.test.features, labels: accepted.train.labels + accepted.test.labels,
                               classCount: max(accepted.train.classCount, accepted.test.classCount))
        let release: AnalyticsRelease
        do { release = try accepted.plan.analyticsRelease(features: rows.featureNames) } catch { throw OfferRefusal(rule: "statistics", "\(error)") }
        try await reservations.spend(release.event, plan: hash, datasets: accepted.plan.datasets)
        var noise = releaseNoise()
        let r = release.release(rows, noise: &noise)
        var m = Fedgate_V1_FeatureMoments()
        (m.count, m.sums, m.squares, m.bins) = (r.count, r.sums, r.squares, Array(r.bins.joined()))
        try await released(m, accepted, plan: hash, noiseMultiplier: release.moments.noiseMultiplier)
        return m
    }

    /// The weight this silo's updates for the plan carry (`TransferHeader.examples`): its released,
    /// noisy row count, rounded, at least 1 (post-processing of the release: it spends nothing more).
    /// Read from this run's release, else from the silo's audit record of an earlier run's; a silo
    /// that never released for the plan (it joined after the first round) releases now.
    func releasedWeight(_ accepted: AcceptedPlan, plan hash: String) async throws -> UInt64 {
        let count: Double
        if let made = releasedStatistics[hash] {
            count = made.count
        } else if let recorded = try await governor.ledger.backend.auditRecords().last(where: { $0.action == "statistics.release" && $0.subject == hash }),
                  case .statisticsReleased(let release)? = try? AuditEvent(action: recorded.action, payload: recorded.payload) {
            count = release.count
            var m = Fedgate_V1_FeatureMoments()
            m.count = count
            releasedStatistics[hash] = m
        } else {
            count = try await statisticsRelease(accepted, plan: hash).count
        }
        return UInt64(max(1, min(count.rounded(), Double(1 << 40))))
    }
}
