import FedGateLearning
import FedGatePrivacy
import Foundation

struct KnownDatasets: PlanRule {
    let name = "datasets"
    func check(_ c: DecisionContext) -> [String] {
        c.plan.datasets.filter { c.policy.datasets[$0] == nil }.map {
            "data set '\($0)' is not offered by silo '\(c.policy.silo)' (it offers: \(c.policy.datasets.keys.sorted().joined(separator: ", ")))"
        }
    }
}

struct PurposeAllowed: PlanRule {
    let name = "purpose"
    func check(_ c: DecisionContext) -> [String] {
        c.plan.datasets.compactMap { d in
            guard let rule = c.policy.datasets[d], !rule.purposes.contains(c.plan.purpose) else { return nil }
            return "purpose '\(c.plan.purpose)' is not allowed for data set '\(d)' (allowed: \(rule.purposes.joined(separator: ", ")))"
        }
    }
}

struct PurposeConsented: PlanRule {
    let name = "consent"
    func check(_ c: DecisionContext) -> [String] {
        guard let consents = c.consentedPurposes else { return [] }
        return c.plan.datasets.compactMap { d in
            let covered = consents[d] ?? []
            guard !covered.contains(c.plan.purpose) else { return nil }
            return "purpose '\(c.plan.purpose)' is not consented for data set '\(d)' (consent covers: \(covered.isEmpty ? "nothing" : covered.sorted().joined(separator: ", ")))"
        }
    }
}

struct ColumnsAllowed: PlanRule {
    let name = "columns"
    func check(_ c: DecisionContext) -> [String] {
        c.plan.datasets.compactMap { d in
            guard let rule = c.policy.datasets[d] else { return nil }
            let extra = c.plan.columns.filter { !rule.columns.contains($0) }
            return extra.isEmpty ? nil : "columns \(extra.joined(separator: ", ")) of data set '\(d)' may not be read"
        }
    }
}

struct ResidencyAllowed: PlanRule {
    let name = "residency"
    func check(_ c: DecisionContext) -> [String] {
        var r: [String] = []
        if !c.policy.allowedRegions.contains(c.plan.brokerRegion) {
            r.append("updates may not go to region '\(c.plan.brokerRegion)' (allowed: \(c.policy.allowedRegions.joined(separator: ", ")))")
        }
        if !c.policy.allowedJurisdictions.contains(c.plan.brokerJurisdiction) {
            r.append("updates may not go to jurisdiction '\(c.plan.brokerJurisdiction)' (allowed: \(c.policy.allowedJurisdictions.joined(separator: ", ")))")
        }
        return r
    }
}

/// A rule about how a plan trains (its DP-SGD, secure aggregation, update codec, label's classes):
/// `PolicyEngine` does not apply it to a plan that trains nothing (an evaluation or statistics plan).
protocol TrainingRule: PlanRule {}

/// A statistics plan's release must be at least as noisy as the policy's least noise multiplier.
struct StatisticsNoiseAtLeast: PlanRule {
    let name = "noise"
    func check(_ c: DecisionContext) -> [String] {
        guard c.plan.isStatistics, let z = c.plan.statistics?.noiseMultiplier, z < c.policy.minNoiseMultiplier else { return [] }
        return ["the statistics release's noise multiplier \(z) is below the least accepted, \(c.policy.minNoiseMultiplier)"]
    }
}

struct NoiseAtLeast: TrainingRule {
    let name = "noise"
    func check(_ c: DecisionContext) -> [String] {
        guard let z = try? c.plan.noiseMultiplier() else {
            return ["the plan's DP settings give no usable noise multiplier (target ε unreachable?)"]
        }
        return z >= c.policy.minNoiseMultiplier ? [] : [String(format: "noise multiplier %.4g is below the least accepted, %.4g", z, c.policy.minNoiseMultiplier)]
    }
}

struct ClipAtMost: TrainingRule {
    let name = "clipping"
    func check(_ c: DecisionContext) -> [String] {
        return c.plan.dp.clipNorm <= c.policy.maxClipNorm ? [] : ["clipping norm \(c.plan.dp.clipNorm) exceeds the largest accepted, \(c.policy.maxClipNorm)"]
    }
}

struct DeltaAtMost: TrainingRule {
    let name = "delta"
    func check(_ c: DecisionContext) -> [String] {
        return c.plan.datasets.compactMap { d in
            guard let rule = c.policy.datasets[d], c.plan.dp.delta > rule.caps.deltaMax else { return nil }
            return "δ = \(c.plan.dp.delta) exceeds data set '\(d)''s δ at most \(rule.caps.deltaMax)"
        }
    }
}

struct EpsilonCaps: PlanRule {
    let name = "budget"
    func check(_ c: DecisionContext) -> [String] {
        var r: [String] = []
        for d in c.plan.datasets {
            guard let caps = c.policy.datasets[d]?.caps else { continue }
            // An evaluation plan runs no DP-SGD: its release is reported at the data set's δ.
            let delta = c.plan.trainsNothing ? caps.deltaMax : c.plan.dp.delta
            let own = c.epsilon(with: [], delta: delta)
            if own > caps.perPlan { r.append(String(format: "the plan would spend ε = %.4g of data set '%@', above its per-plan cap %.4g", own, d, caps.perPlan)) }
            let prior = c.priorEvents[d]
            if let w = caps.window {
                let e = c.epsilon(with: prior?.window ?? [], delta: delta)
                if e > w.epsilon { r.append(String(format: "ε in the last %d days would reach %.4g for data set '%@', above its cap %.4g", w.days, e, d, w.epsilon)) }
            }
            if let life = caps.lifetime {
                let e = c.epsilon(with: prior?.lifetime ?? [], delta: delta)
                if e > life { r.append(String(format: "lifetime ε would reach %.4g for data set '%@', above its cap %.4g", e, d, life)) }
            }
        }
        return r
    }
}

struct SecureAggregationRequired: TrainingRule {
    let name = "secure-aggregation"
    func check(_ c: DecisionContext) -> [String] {
        return c.policy.requireSecureAggregation && !c.plan.secureAggregation ? ["secure aggregation is required by silo '\(c.policy.silo)' but the plan does not use it"] : []
    }
}

/// `privacy.require_discrete_noise`: the plan's DP-SGD noise on a grid (`dp.noise: discrete`), the
/// defence against floating-point attacks; the built-in trainer is the one that applies it.
struct DiscreteNoiseRequired: TrainingRule {
    let name = "discrete-noise"
    func check(_ c: DecisionContext) -> [String] {
        guard c.policy.requireDiscreteNoise else { return [] }
        if c.plan.dp.discreteNoise != true {
            return ["silo '\(c.policy.silo)' requires DP-SGD noise on a grid against floating-point attacks (dp.noise: discrete); the plan uses floating-point noise"]
        }
        return c.plan.executor == .builtin ? [] : ["dp.noise: discrete is applied by the built-in trainer; a silo's own program's update is noised once by the gateway, in floating point"]
    }
}

struct QuorumAtLeast: PlanRule {
    let name = "quorum"
    func check(_ c: DecisionContext) -> [String] {
        c.plan.quorum >= c.policy.minSilosPerRound ? [] : ["rounds may have \(c.plan.quorum) silos, the policy needs at least \(c.policy.minSilosPerRound)"]
    }
}

struct ModelAllowed: PlanRule {
    let name = "model"
    func check(_ c: DecisionContext) -> [String] {
        guard !c.plan.isStatistics else { return [] }
        let kind = String(c.plan.model.split(separator: ":").first ?? "")
        return c.policy.models.contains(kind) ? [] : ["model kind '\(kind)' is not allowed (allowed: \(c.policy.models.joined(separator: ", ")))"]
    }
}

/// Without a schema, a model other than logistic regression takes its classes from the silo's
/// labels (the largest + 1), a value released without DP: the policy must list `label_classes`.
struct LabelClassesReleased: TrainingRule {
    let name = "releases"
    func check(_ c: DecisionContext) -> [String] {
        // A model kind that does not exist is the `model` rule's to refuse.
        guard c.plan.schema == nil, let kind = try? ModelKind(parsing: c.plan.model), kind != .logistic, !c.policy.allows(.labelClasses) else { return [] }
        return ["the model's classes would be this silo's label's (its largest label + 1), which its policy does not release without DP "
                + "(releases.without_dp: [label_classes]); a plan with a schema states its classes"]
    }
}

struct ExecutorAllowed: PlanRule {
    let name = "executor"
    func check(_ c: DecisionContext) -> [String] {
        c.policy.executors.contains(c.plan.executor.description) ? [] : ["executor '\(c.plan.executor)' is not allowed (allowed: \(c.policy.executors.joined(separator: ", ")))"]
    }
}

struct HoursAllowed: PlanRule {
    let name = "hours"
    func check(_ c: DecisionContext) -> [String] {
        guard let h = c.policy.hours else { return [] }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let hour = calendar.component(.hour, from: c.now)
        let inside = h.from < h.to ? (hour >= h.from && hour < h.to) : (hour >= h.from || hour < h.to)
        return inside ? [] : ["training may run only between \(h.from):00 and \(h.to):00 UTC (it is \(hour):00 UTC)"]
    }
}

/// `compression`: the codec a plan's updates travel in (none: float32) must be one the policy lists.
struct CompressionAllowed: TrainingRule {
    let name = "compression"
    func check(_ c: DecisionContext) -> [String] {
        guard let allowed = c.policy.compressions else { return [] }
        let asked = c.plan.compression.map { String($0.split(separator: ":").first ?? "") } ?? "none"
        guard !allowed.contains(asked) else { return [] }
        return [asked == "none" ? "updates would travel as float32; the policy requires a codec (compression: \(allowed.joined(separator: ", ")))"
                : "updates would travel as \(c.plan.compression!), which the policy does not allow (compression: \(allowed.joined(separator: ", ")))"]
    }
}

/// An evaluation plan's result must be able to leave: exactly (`final_evaluation` listed), or with
/// DP (`evaluation_noise_multiplier`, classification only); otherwise the silo refuses it.
struct EvaluationReleased: PlanRule {
    let name = "releases"
    func check(_ c: DecisionContext) -> [String] {
        guard c.plan.isEvaluation, !c.policy.allows(.finalEvaluation) else { return [] }
        guard c.policy.evaluationNoiseMultiplier != nil else {
            return ["an evaluation plan's result would leave this silo, which its policy releases neither exactly "
                    + "(releases.without_dp: [final_evaluation]) nor with DP (releases.evaluation_noise_multiplier)"]
        }
        if (try? ModelKind(parsing: c.plan.model)) == .linear {
            return ["a regression's evaluation leaves only exactly (releases.without_dp: [final_evaluation]); its DP release is not built"]
        }
        return []
    }
}
