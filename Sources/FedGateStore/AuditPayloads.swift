import Foundation

// The fields of each audit event, under the snake_case names the stored JSON has always used.
// Optional fields are left out of the JSON when absent (older records wrote them as null; both
// read back as absent). Times are seconds since 1970, as the tables store them.

extension AuditEvent {
    /// `ledger.budget`: a data set's caps.
    public struct Budget: Codable, Sendable, Equatable {
        public var dataset: String, delta: Double, perPlanCap: Double
        public var windowDays: Int?, windowCap: Double?, lifetimeCap: Double?
        enum CodingKeys: String, CodingKey {
            case dataset, delta, perPlanCap = "per_plan_cap", windowDays = "window_days", windowCap = "window_cap", lifetimeCap = "lifetime_cap"
        }
        public var caps: DatasetBudget {
            DatasetBudget(name: dataset, delta: delta, perPlanCap: perPlanCap, windowDays: windowDays, windowCap: windowCap, lifetimeCap: lifetimeCap)
        }
    }

    /// `ledger.reserve`: an entry and its DP event (the event's own canonical JSON).
    public struct Reservation: Codable, Sendable, Equatable {
        public var id: String, dataset: String, plan: String, round: Int, event: String
    }

    /// `ledger.commit` / `ledger.release`.
    public struct Settlement: Codable, Sendable, Equatable {
        public var id: String, state: LedgerState
    }

    /// `consent.add`.
    public struct Consent: Codable, Sendable, Equatable {
        public var id: String, dataset: String, purpose: String, legalBasis: String, scope: String
        public var validFrom: Double, validUntil: Double?
        enum CodingKeys: String, CodingKey {
            case id, dataset, purpose, legalBasis = "legal_basis", scope, validFrom = "valid_from", validUntil = "valid_until"
        }
    }

    /// `consent.withdraw`.
    public struct ConsentWithdrawal: Codable, Sendable, Equatable { public var id: String }

    /// `policy.decision`: a silo's judgement of a plan under its policy.
    public struct Decision: Codable, Sendable, Equatable {
        public var silo: String, policy: String, plan: String, outcome: String, reasons: [String]
        /// What the policy lets leave without DP, and its final evaluation's noise multiplier
        /// (absent from records written before the policy named them).
        public var releasedWithoutDP: [String]?, evaluationNoiseMultiplier: Double?
        enum CodingKeys: String, CodingKey {
            case silo, policy, plan, outcome, reasons, releasedWithoutDP = "released_without_dp", evaluationNoiseMultiplier = "evaluation_noise_multiplier"
        }
        public init(silo: String, policy: String, plan: String, outcome: String, reasons: [String]) {
            (self.silo, self.policy, self.plan, self.outcome, self.reasons) = (silo, policy, plan, outcome, reasons)
        }
    }

    /// `plan.approve` / `plan.reject`: a person at the silo.
    public struct Approval: Codable, Sendable, Equatable { public var plan: String, silo: String }

    /// `party.enroll` / `enrolment.redeem`.
    public struct Enrolment: Codable, Sendable, Equatable {
        public var kind: String, region: String, jurisdiction: String, certificateSHA256: String
        enum CodingKeys: String, CodingKey { case kind, region, jurisdiction, certificateSHA256 = "certificate_sha256" }
    }

    /// `enrolment.invite`.
    public struct Invitation: Codable, Sendable, Equatable {
        public var region: String, jurisdiction: String, expiresAt: Double
        enum CodingKeys: String, CodingKey { case region, jurisdiction, expiresAt = "expires_at" }
    }

    /// `identity.revoke` / `certificate.revoke`.
    public struct Revocation: Codable, Sendable, Equatable { public var kind: String, value: String, reason: String }

    /// `certificate.renew`.
    public struct Renewal: Codable, Sendable, Equatable {
        public var notAfter: Double, sha256: String
        enum CodingKeys: String, CodingKey { case notAfter = "not_after", sha256 }
        public init(notAfter: Date, sha256: String) { (self.notAfter, self.sha256) = (notAfter.timeIntervalSince1970, sha256) }
    }

    /// `plan.submit`.
    public struct PlanSubmission: Codable, Sendable, Equatable {
        public var purpose: String, rounds: Int, strategy: String
        /// What the plan asks of the silos (absent from records written before they were kept).
        public var datasets: [String]?, columns: [String]?, quorum: Int?, secureAggregation: Bool?
        /// The plan's DP settings, as one line (noise multiplier or target ε, clipping norm, sampling rate, δ).
        public var dp: String?
        enum CodingKeys: String, CodingKey {
            case purpose, rounds, strategy, datasets, columns, quorum, dp
            case secureAggregation = "secure_aggregation"
        }
        public init(purpose: String, rounds: Int, strategy: String, datasets: [String]? = nil, columns: [String]? = nil, quorum: Int? = nil,
                    secureAggregation: Bool? = nil, dp: String? = nil) {
            (self.purpose, self.rounds, self.strategy) = (purpose, rounds, strategy)
            (self.datasets, self.columns, self.quorum, self.secureAggregation, self.dp) = (datasets, columns, quorum, secureAggregation, dp)
        }
    }

    /// `plan.finished` / `plan.failed` / `plan.cancelled`.
    public struct PlanEnd: Codable, Sendable, Equatable { public var reason: String? }

    /// `plan.cancel`: who cancelled it and in which state it was.
    public struct PlanCancellation: Codable, Sendable, Equatable {
        public var state: String
        public init(state: String) { self.state = state }
    }

    /// `plan.await_approval`: a plan waiting, before its first round, for people at these silos to approve it (until `until`,
    /// seconds since 1970); `accepted`: the silos that accepted it so far.
    public struct ApprovalAwaited: Codable, Sendable, Equatable {
        public var silos: [String], accepted: [String], until: Double
        public init(silos: [String], accepted: [String], until: Double) { (self.silos, self.accepted, self.until) = (silos, accepted, until) }
    }

    /// `plan.resume`: a broker took a running plan up from its store.
    public struct PlanResumption: Codable, Sendable, Equatable {
        public var nextRound: Int, checkpointRound: Int?
        enum CodingKeys: String, CodingKey { case nextRound = "next_round", checkpointRound = "checkpoint_round" }
        public init(nextRound: Int, checkpointRound: Int?) { (self.nextRound, self.checkpointRound) = (nextRound, checkpointRound) }
    }

    /// `round.planned`: the silos a round was offered to.
    public struct RoundOpening: Codable, Sendable, Equatable { public var round: Int, sampled: [String] }

    /// `round.<state>`: a transition of the round record; a commit names its checkpoint.
    public struct RoundTransition: Codable, Sendable, Equatable {
        public var round: Int, survivors: [String], checkpointSHA256: String?
        enum CodingKeys: String, CodingKey { case round, survivors, checkpointSHA256 = "checkpoint_sha256" }
    }

    /// `round.traffic` (subject: the plan): the update bytes a committed round took, what they
    /// would have been as float32, and the plan's codec (nil: float32).
    public struct RoundTraffic: Codable, Sendable, Equatable {
        public var round: Int, bytesIn: Int, rawBytes: Int, codec: String?
        enum CodingKeys: String, CodingKey { case round, bytesIn = "bytes_in", rawBytes = "raw_bytes", codec }
        public init(round: Int, bytesIn: Int, rawBytes: Int, codec: String?) { (self.round, self.bytesIn, self.rawBytes, self.codec) = (round, bytesIn, rawBytes, codec) }
    }

    /// `round.abort`: why the broker gave a round up.
    public struct RoundAbandonment: Codable, Sendable, Equatable {
        public var round: Int, reason: String
        public init(round: Int, reason: String) { (self.round, self.reason) = (round, reason) }
    }

    /// `broker.lease`: a change of the leading broker.
    public struct Lease: Codable, Sendable, Equatable {
        public var holder: String, term: Int, expiresAt: Double
        enum CodingKeys: String, CodingKey { case holder, term, expiresAt = "expires_at" }
    }

    /// `model.version`: a registry version.
    public struct Version: Codable, Sendable, Equatable {
        public var version: Int, round: Int, contentSHA256: String, epsilonPerSilo: [String: Double]
        enum CodingKeys: String, CodingKey { case version, round, contentSHA256 = "content_sha256", epsilonPerSilo = "epsilon_per_silo" }
    }

    /// `model.gate`: the plan's gate on the silos' final evaluations, passed or not.
    public struct Gate: Codable, Sendable, Equatable {
        public struct Silo: Codable, Sendable, Equatable {
            public var accuracy: Double, examples: Int, epsilon: Double, epsilonCap: Double, personalisedAccuracy: Double?
            /// A regression model's RMSE on the silo's held-out rows.
            public var rmse: Double?
            enum CodingKeys: String, CodingKey {
                case accuracy, examples, epsilon, epsilonCap = "epsilon_cap", personalisedAccuracy = "personalised_accuracy", rmse
            }
            public init(accuracy: Double, examples: Int, epsilon: Double, epsilonCap: Double, personalisedAccuracy: Double?) {
                (self.accuracy, self.examples, self.epsilon, self.epsilonCap, self.personalisedAccuracy) = (accuracy, examples, epsilon, epsilonCap, personalisedAccuracy)
            }
        }
        public var round: Int, passed: Bool, reasons: [String], accuracy: Double?, fairnessDelta: Double?
        public var silos: [String: Silo], failures: [String: String], minAccuracy: Double?, maxDrop: Double?
        /// A regression model's pooled RMSE and the silos' R², and the plan's limits on them.
        public var rmse: Double?, r2: Double?, maxRMSE: Double?, minR2: Double?
        /// With slices: each cell's pooled accuracy, their gap, and the plan's limit on it.
        public var slices: [String: Double]?, sliceGap: Double?, maxSliceGap: Double?
        enum CodingKeys: String, CodingKey {
            case round, passed, reasons, accuracy, fairnessDelta = "fairness_delta", silos, failures, minAccuracy = "min_accuracy", maxDrop = "max_drop"
            case rmse, r2, maxRMSE = "max_rmse", minR2 = "min_r2", slices, sliceGap = "slice_gap", maxSliceGap = "max_slice_gap"
        }
        public init(round: Int, passed: Bool, reasons: [String], accuracy: Double?, fairnessDelta: Double?, silos: [String: Silo],
                    failures: [String: String], minAccuracy: Double?, maxDrop: Double?) {
            (self.round, self.passed, self.reasons, self.accuracy, self.fairnessDelta) = (round, passed, reasons, accuracy, fairnessDelta)
            (self.silos, self.failures, self.minAccuracy, self.maxDrop) = (silos, failures, minAccuracy, maxDrop)
        }
    }

    /// `model.pull`: a range of a version's file sent to a person.
    public struct Pull: Codable, Sendable, Equatable {
        public var offset: Int, bytes: Int
        public init(offset: Int, bytes: Int) { (self.offset, self.bytes) = (offset, bytes) }
    }

    /// `model.rollback`.
    public struct Rollback: Codable, Sendable, Equatable {
        public var from: Int, to: Int
        public init(from: Int, to: Int) { (self.from, self.to) = (from, to) }
    }

    /// `statistics.release`: a silo's statistics release for a plan, as it left (noisy; the DP event
    /// is the ledger's `gaussian(noise_multiplier)` entry of round 0 on each data set). The released
    /// row count is what weighs the silo's updates.
    public struct StatisticsReleased: Codable, Sendable, Equatable {
        public var datasets: [String], noiseMultiplier: Double, features: Int, count: Double
        enum CodingKeys: String, CodingKey {
            case datasets, noiseMultiplier = "noise_multiplier", features, count
        }
        public init(datasets: [String], noiseMultiplier: Double, features: Int, count: Double) {
            (self.datasets, self.noiseMultiplier, self.features, self.count) = (datasets, noiseMultiplier, features, count)
        }
    }

    /// `statistics.pooled` (subject: the plan): a statistics plan's figures, pooled from these silos'
    /// releases (each with DP, in its own ledger): the noisy row count and each column's mean.
    public struct StatisticsPooled: Codable, Sendable, Equatable {
        public var silos: [String], count: Double, means: [String: Double]
        public init(silos: [String], count: Double, means: [String: Double]) { (self.silos, self.count, self.means) = (silos, count, means) }
    }

    /// `attack.flag` (subject: the silo): a round left the silo's update out as a likely attack: a
    /// robust aggregator excluded it (`excluded`) or validation refused it (`refused`).
    public struct AttackFlagged: Codable, Sendable, Equatable {
        public var plan: String, round: Int, kind: String, reason: String
        public init(plan: String, round: Int, kind: String, reason: String) {
            (self.plan, self.round, self.kind, self.reason) = (plan, round, kind, reason)
        }
    }

    /// `attack.alert` (subject: the silo): the silo was flagged in `rounds`, as many rounds of the
    /// plan as the broker's alert threshold (`alert_after`) asks.
    public struct AttackAlert: Codable, Sendable, Equatable {
        public var plan: String, rounds: [Int], alertAfter: Int
        enum CodingKeys: String, CodingKey { case plan, rounds, alertAfter = "alert_after" }
        public init(plan: String, rounds: [Int], alertAfter: Int) { (self.plan, self.rounds, self.alertAfter) = (plan, rounds, alertAfter) }
    }

    /// A refusal, with what the refusing part knew about it.
    public struct Refusal: Codable, Sendable, Equatable {
        public enum Kind: String, Sendable, CaseIterable {
            /// A TLS connection refused (handshake, revocation, timeout).
            case connection = "connection.refuse"
            /// A call refused by the authorisation interceptor.
            case call = "call.refuse"
            /// An upload refused by the transfer before the coordinator saw it.
            case upload = "update.refuse"
            /// An update the coordinator refused (validation, round, size).
            case update = "update.reject"
            /// An offer answer the coordinator refused (its feature moments).
            case reply = "reply.reject"
            case enrolment = "enrolment.refuse"
            case modelDownload = "model.download.refuse"
            case renewal = "certificate.renew.refuse"
            /// A silo left a secure round below its policy's least threshold or survivors.
            case secureRound = "secagg.refuse"
            /// A silo's answer to a deployment, or its monitoring report, that the broker could not take.
            case monitor = "monitor.refuse"
        }
        public var reason: String
        /// How many refusals of this kind and source the record stands for (rate-limited audit).
        public var count: Int?
        public var peer: String?, method: String?, listener: String?, plan: String?, round: Int?, bytes: Int?, asked: String?

        public init(reason: String, count: Int? = nil, peer: String? = nil, method: String? = nil, listener: String? = nil,
                    plan: String? = nil, round: Int? = nil, bytes: Int? = nil, asked: String? = nil) {
            (self.reason, self.count, self.peer, self.method, self.listener) = (reason, count, peer, method, listener)
            (self.plan, self.round, self.bytes, self.asked) = (plan, round, bytes, asked)
        }
    }
}

// Built from the store's own records (extensions, so each payload keeps its memberwise init).
extension AuditEvent.Budget {
    init(_ b: DatasetBudget) {
        (dataset, delta, perPlanCap, windowDays, windowCap, lifetimeCap) = (b.name, b.delta, b.perPlanCap, b.windowDays, b.windowCap, b.lifetimeCap)
    }
}

extension AuditEvent.Consent {
    init(_ c: ConsentRecord) {
        (id, dataset, purpose, legalBasis, scope) = (c.id, c.dataset, c.purpose, c.legalBasis, c.scope)
        (validFrom, validUntil) = (c.validFrom.timeIntervalSince1970, c.validUntil?.timeIntervalSince1970)
    }
}

extension AuditEvent.Enrolment {
    init(_ p: Party) { (kind, region, jurisdiction, certificateSHA256) = (p.kind.rawValue, p.region, p.jurisdiction, p.certificateSHA256) }
}

extension AuditEvent.Lease {
    init(_ l: BrokerLease) { (holder, term, expiresAt) = (l.holder, l.term, l.expiresAt.timeIntervalSince1970) }
}

extension AuditEvent {
    /// `deploy.start` (subject: `deployment N`): a registry version sent to silos, at a stage, with
    /// the gate its monitoring checks must pass.
    public struct DeploymentStarted: Codable, Sendable, Equatable {
        public var deployment: Int, version: Int, stage: String, silos: [String], maxPSI: Double, significance: Double
        public var minAccuracy: Double?, watch: [String], positions: [Int]
        enum CodingKeys: String, CodingKey {
            case deployment, version, stage, silos, maxPSI = "max_psi", significance, minAccuracy = "min_accuracy", watch, positions
        }
        public init(deployment: Int, version: Int, stage: String, silos: [String], maxPSI: Double, significance: Double, minAccuracy: Double?,
                    watch: [String], positions: [Int]) {
            (self.deployment, self.version, self.stage, self.silos, self.maxPSI) = (deployment, version, stage, silos, maxPSI)
            (self.significance, self.minAccuracy, self.watch, self.positions) = (significance, minAccuracy, watch, positions)
        }
    }

    /// `deploy.answer` (subject: the silo): the silo runs `version` now (0: none), or could not
    /// install it (`problem`); with its reference histograms (released with DP) when it monitors.
    public struct DeploymentAnswered: Codable, Sendable, Equatable {
        public var deployment: Int, version: Int, rollback: Bool, problem: String?, reference: [[Double]]?, sigma: Double?
        public init(deployment: Int, version: Int, rollback: Bool, problem: String?, reference: [[Double]]?, sigma: Double?) {
            (self.deployment, self.version, self.rollback, self.problem, self.reference, self.sigma) = (deployment, version, rollback, problem, reference, sigma)
        }
    }

    /// `monitor.check` (subject: the silo): a monitoring release of the version it runs (the noisy
    /// counts as released, and their noise) and what the gate made of it.
    public struct MonitorChecked: Codable, Sendable, Equatable {
        public var deployment: Int, version: Int, counts: [Double], sigma: Double, accuracy: Double?, psi: [String: Double], reasons: [String]
        /// Each watched column's p-value under "the same population" (drift needs a small one too).
        public var pValues: [String: Double]?
        enum CodingKeys: String, CodingKey { case deployment, version, counts, sigma, accuracy, psi, reasons, pValues = "p_values" }
        public init(deployment: Int, version: Int, counts: [Double], sigma: Double, accuracy: Double?, psi: [String: Double], reasons: [String],
                    pValues: [String: Double]? = nil) {
            (self.deployment, self.version, self.counts, self.sigma, self.accuracy, self.psi, self.reasons) = (deployment, version, counts, sigma, accuracy, psi, reasons)
            self.pValues = pValues
        }
    }

    /// `deploy.alert` (subject: the silo whose check failed): why, and where each silo goes back to.
    public struct DeploymentAlert: Codable, Sendable, Equatable {
        public var deployment: Int, version: Int, reasons: [String], back: [String: Int]
        public init(deployment: Int, version: Int, reasons: [String], back: [String: Int]) {
            (self.deployment, self.version, self.reasons, self.back) = (deployment, version, reasons, back)
        }
    }

    /// `deploy.rolled_back` (subject: `deployment N`): every silo is back on its previous version,
    /// `seconds` after the alert.
    public struct DeploymentRolledBack: Codable, Sendable, Equatable {
        public var deployment: Int, version: Int, seconds: Double
        public init(deployment: Int, version: Int, seconds: Double) { (self.deployment, self.version, self.seconds) = (deployment, version, seconds) }
    }
}
