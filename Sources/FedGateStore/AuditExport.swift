import FedGatePrivacy
import Foundation

/// One store's audit trail as exported: where it came from, its records, and whether its chain held.
public struct AuditTrail: Sendable {
    public let source: String
    public let records: [AuditRecord]
    public let verification: AuditVerification

    /// Verifies the whole chain (before any filter), so the export can say whether it held.
    public init(source: String, records: [AuditRecord]) {
        self.source = source
        self.records = records
        verification = AuditVerification.verify(records)
    }

    public var intact: Bool { if case .intact = verification { return true } else { return false } }
}

/// Which records an export keeps: a time window, a silo, a plan.
public struct AuditFilter: Sendable, Equatable {
    public var from: Date?
    public var to: Date?
    /// Records by the silo, about it, or naming it in their payload.
    public var silo: String?
    /// Records about the plan (by its content hash) or naming it in their payload.
    public var plan: String?

    public init(from: Date? = nil, to: Date? = nil, silo: String? = nil, plan: String? = nil) {
        self.from = from
        self.to = to
        self.silo = silo
        self.plan = plan
    }

    public func keeps(_ r: AuditRecord) -> Bool {
        if let from, r.at < from { return false }
        if let to, r.at > to { return false }
        if let silo, r.actor != silo, r.subject != silo, !r.payload.contains("\"\(silo)\"") { return false }
        if let plan, r.subject != plan, !r.payload.contains(plan) { return false }
        return true
    }
}

/// Audit exports for compliance officers: JSON lines, CSV and (see AuditXML) XML, every record with
/// its hash, and the chain's verification per source.
public enum AuditExport {
    public static func timestamp(_ d: Date) -> String {
        d.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted))
    }

    /// One JSON object per line: first one per source with its chain verification, then the records.
    public static func jsonl(_ trails: [AuditTrail], filter: AuditFilter) throws -> String {
        var lines: [String] = []
        for t in trails {
            lines.append(try line(["type": "chain", "source": t.source, "intact": t.intact, "verification": t.verification.description,
                                   "records": t.records.count]))
            for r in t.records where filter.keeps(r) {
                let payload = (try? JSONSerialization.jsonObject(with: Data(r.payload.utf8), options: [.fragmentsAllowed])) ?? r.payload
                // `payload_text` and `at_bits` are what the hash covers, exactly: another party
                // verifies the chain from this file (`fedgate audit export --also-trail`).
                lines.append(try line(["type": "record", "source": t.source, "seq": r.seq, "at": timestamp(r.at), "actor": r.actor,
                                       "action": r.action, "subject": r.subject, "payload": payload, "previous_hash": r.previousHash, "hash": r.hash,
                                       "payload_text": r.payload, "at_bits": String(r.at.timeIntervalSince1970.bitPattern)]))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func line(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
    }

    /// RFC 4180 CSV with a header row; the chain's verification per source is its own column.
    public static func csv(_ trails: [AuditTrail], filter: AuditFilter) -> String {
        var out = "source,chain,seq,at,actor,action,subject,payload,previous_hash,hash\r\n"
        for t in trails {
            for r in t.records where filter.keeps(r) {
                out += [t.source, t.intact ? "intact" : "broken", String(r.seq), timestamp(r.at), r.actor, r.action, r.subject, r.payload,
                        r.previousHash, r.hash].map(field).joined(separator: ",") + "\r\n"
            }
        }
        return out
    }

    static func field(_ s: String) -> String {
        // Quote when needed; a leading formula character is neutralised so spreadsheets do not run it.
        var v = s
        if let first = v.first, "=+-@".contains(first), Double(v) == nil { v = "'" + v }
        guard v.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) || v != s else { return v }
        return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// What a compliance report shows, read from audit records (no I/O): plans and their purposes,
/// consent bases, policy decisions, ε over time per silo against its cap, participation per round,
/// model versions and the gates that made or held them back.
public struct ComplianceReport: Sendable {
    public struct Plan: Sendable, Equatable {
        public let hash: String, purpose: String, rounds: Int, strategy: String, submittedBy: String, at: Date
        /// What it asked of the silos, as its submission recorded it.
        public let submission: AuditEvent.PlanSubmission
        /// How its run ended (`finished`, `failed`, `cancelled`) with the reason; nil while running.
        public var outcome: Outcome? = nil
        public struct Outcome: Sendable, Equatable { public let state: String, reason: String? }
    }
    /// A person's approval or rejection of a plan at a silo (`actor` is the name given to `fedgate plan approve --actor`).
    public struct Approval: Sendable, Equatable { public let silo: String, plan: String, approved: Bool, actor: String, at: Date }
    /// A silo's or person's enrolment, invitation, renewal or revocation.
    public struct PartyChange: Sendable, Equatable { public let at: Date, action: String, subject: String, detail: String }
    /// A data set's caps as a silo set them.
    public struct Caps: Sendable, Equatable {
        public let source: String, dataset: String, perPlan: Double, windowDays: Int?, window: Double?, lifetime: Double?, delta: Double
    }
    public struct Consent: Sendable, Equatable { public let source: String, dataset: String, purpose: String, basis: String, scope: String, withdrawn: Bool }
    public struct Decision: Sendable, Equatable { public let silo: String, plan: String, outcome: String, reasons: [String], at: Date }
    public struct EpsilonPoint: Sendable, Equatable { public let at: Date, epsilon: Double }
    public struct EpsilonSeries: Sendable, Equatable {
        public let silo: String, dataset: String
        /// The data set's lifetime cap (or, without one, its per-plan cap) and its per-plan cap.
        public let cap: Double?
        public let perPlanCap: Double?
        public let points: [EpsilonPoint]
    }
    /// A round of a plan's run (`run`: 1, and one more each time the plan was submitted again).
    public struct Round: Sendable, Equatable {
        public let plan: String, run: Int, number: Int, state: String, participants: [String], at: Date
        /// Why the round was aborted, when it was.
        public var reason: String? = nil
        /// A committed round's update bytes and what they would have been as float32 (`round.traffic`).
        public var traffic: Traffic? = nil
        public struct Traffic: Sendable, Equatable { public let bytesIn: Int, rawBytes: Int }
    }
    public struct Gate: Sendable, Equatable {
        public let plan: String, round: Int, passed: Bool, reasons: [String], accuracy: Double?, at: Date
        public let silos: [String: Double]
        /// With personalisation: each silo's own model's accuracy.
        public let personalised: [String: Double]
        /// With slices: each cell's pooled accuracy (empty without).
        public var slices: [String: Double] = [:]
    }
    public struct Version: Sendable, Equatable { public let version: Int, plan: String, round: Int, contentSHA256: String, at: Date, actor: String, action: String }
    public struct Unreadable: Sendable, Equatable { public let source: String, seq: Int, action: String, problem: String }
    /// A round's update left out as a likely attack (`attack.flag`).
    public struct AttackFlag: Sendable, Equatable { public let plan: String, round: Int, silo: String, kind: String, reason: String, at: Date }
    /// A silo flagged round after round in a plan (`attack.alert`).
    public struct AttackAlert: Sendable, Equatable { public let plan: String, silo: String, rounds: [Int], at: Date }
    /// A registry version sent to silos (`deploy.start`), with who answered and how it ended.
    public struct Deployment: Sendable, Equatable {
        public let id: Int, version: Int, stage: String, silos: [String], by: String, at: Date
        public let maxPSI: Double, minAccuracy: Double?, watch: [String]
        /// Each check with its watched column of largest PSI and that column's p-value.
        public var checks: [Check] = []
        public var rollbackSeconds: Double? = nil

        public struct Check: Sendable, Equatable {
            public let silo: String, version: Int, accuracy: Double?, worst: Worst?, reasons: [String], at: Date
        }
        public struct Worst: Sendable, Equatable { public let column: String, psi: Double, p: Double? }
    }
    /// A failed monitoring check (`deploy.alert`) and where each silo was sent back to.
    public struct DeploymentAlert: Sendable, Equatable { public let deployment: Int, version: Int, silo: String, reasons: [String], back: [String: Int], at: Date }

    public var chains: [(source: String, verification: AuditVerification, records: Int)] = []
    public var plans: [Plan] = []
    public var consents: [Consent] = []
    public var decisions: [Decision] = []
    public var epsilonSeries: [EpsilonSeries] = []
    public var rounds: [Round] = []
    public var gates: [Gate] = []
    public var versions: [Version] = []
    public var refusals: [(at: Date, action: String, subject: String, reason: String)] = []
    public var approvals: [Approval] = []
    /// Plans that waited for approvals before their first round: which silos, and when.
    public var awaitedApprovals: [(plan: String, silos: [String], at: Date)] = []
    public var parties: [PartyChange] = []
    public var caps: [Caps] = []
    /// Records whose payload does not read as the event their action names: shown, never read as zeros.
    public var unreadable: [Unreadable] = []
    /// What left each silo for each plan: with DP (its ledger's commits) and without (its policy's list).
    public var releases: [Releases] = []
    /// Poisoning flags per round, and the alerts of silos flagged round after round.
    public var attackFlags: [AttackFlag] = []
    public var attackAlerts: [AttackAlert] = []
    /// Deployments with their answers, checks and rollback times, and the alerts that rolled them back.
    public var deployments: [Deployment] = []
    public var deploymentAlerts: [DeploymentAlert] = []

    public init(_ trails: [AuditTrail], filter: AuditFilter) {
        for t in trails {
            chains.append((t.source, t.verification, t.records.count))
            // Each record is decoded once, for the report's sections and its ε series alike.
            let decoded = t.records.map { (record: $0, event: AuditEvent.of($0)) }
            read(decoded.filter { filter.keeps($0.record) }, source: t.source)
            epsilonSeries += Self.epsilonSeries(decoded, source: t.source, filter: filter)
            releases += Self.releases(decoded, filter: filter)
        }
        rounds.sort { ($0.plan, $0.run, $0.number) < ($1.plan, $1.run, $1.number) }
    }

    typealias Decoded = (record: AuditRecord, event: Result<AuditEvent, AuditEventError>)

    private mutating func read(_ records: [Decoded], source: String) {
        var roundIndex: [String: Int] = [:]
        // Each submission of a plan starts its next run; its rounds are told apart by it.
        var runs: [String: Int] = [:]
        func run(_ plan: String) -> Int { max(runs[plan] ?? 1, 1) }
        for (r, decoded) in records {
            let event: AuditEvent
            switch decoded {
            case .success(let e): event = e
            case .failure(let error):
                unreadable.append(Unreadable(source: source, seq: r.seq, action: r.action, problem: error.problem))
                continue
            }
            switch event {
            case .planSubmitted(let p):
                runs[r.subject, default: 0] += 1
                plans.append(Plan(hash: r.subject, purpose: p.purpose, rounds: p.rounds, strategy: p.strategy, submittedBy: r.actor, at: r.at, submission: p))
            case .planEnded(let state, let end) where state != .running:
                if let i = plans.lastIndex(where: { $0.hash == r.subject }) { plans[i].outcome = Plan.Outcome(state: state.rawValue, reason: end.reason) }
            case .planAwaitingApproval(let a):
                awaitedApprovals.append((r.subject, a.silos, r.at))
            case .planApproval(let approved, let a):
                approvals.append(Approval(silo: a.silo, plan: a.plan, approved: approved, actor: r.actor, at: r.at))
            case .budgetSet(let b):
                caps.append(Caps(source: source, dataset: b.dataset, perPlan: b.perPlanCap, windowDays: b.windowDays, window: b.windowCap,
                                 lifetime: b.lifetimeCap, delta: b.delta))
            case .partyEnrolled, .enrolmentRedeemed, .enrolmentInvited, .partyRevoked, .revoked, .certificateRenewed:
                parties.append(PartyChange(at: r.at, action: r.action, subject: r.subject, detail: r.payload))
            case .consentAdded(let c):
                consents.append(Consent(source: source, dataset: c.dataset, purpose: c.purpose, basis: c.legalBasis, scope: c.scope, withdrawn: false))
            case .policyDecision(let d):
                decisions.append(Decision(silo: d.silo, plan: r.subject, outcome: d.outcome, reasons: d.reasons, at: r.at))
            case .roundPlanned(let o):
                note(Round(plan: r.subject, run: run(r.subject), number: o.round, state: "planned", participants: o.sampled, at: r.at), &roundIndex)
            case .roundAdvanced(let state, let t):
                note(Round(plan: r.subject, run: run(r.subject), number: t.round, state: state.rawValue, participants: t.survivors, at: r.at), &roundIndex)
            case .roundTraffic(let t): if let i = roundIndex["\(r.subject)/\(run(r.subject))/\(t.round)"] { rounds[i].traffic = .init(bytesIn: t.bytesIn, rawBytes: t.rawBytes) }
            case .roundAbandoned(let a):
                note(Round(plan: r.subject, run: run(r.subject), number: a.round, state: "aborted", participants: [], at: r.at, reason: a.reason), &roundIndex)
            case .modelGated(let g):
                gates.append(Gate(plan: r.subject, round: g.round, passed: g.passed, reasons: g.reasons, accuracy: g.accuracy, at: r.at,
                                  silos: g.silos.mapValues(\.accuracy), personalised: g.silos.compactMapValues(\.personalisedAccuracy), slices: g.slices ?? [:]))
            case .modelVersioned(let v):
                versions.append(Version(version: v.version, plan: r.subject, round: v.round, contentSHA256: v.contentSHA256, at: r.at,
                                        actor: r.actor, action: "recorded"))
            case .modelRolledBack(let b):
                versions.append(Version(version: b.to, plan: "", round: 0, contentSHA256: "", at: r.at, actor: r.actor, action: "rolled back to"))
            case .attackFlagged(let f):
                attackFlags.append(AttackFlag(plan: f.plan, round: f.round, silo: r.subject, kind: f.kind, reason: f.reason, at: r.at))
            case .attackAlert(let a):
                attackAlerts.append(AttackAlert(plan: a.plan, silo: r.subject, rounds: a.rounds, at: r.at))
            case .deploymentStarted, .monitorChecked, .deploymentAlert, .deploymentRolledBack:
                noteDeployment(event, r)
            case .refused(let kind, let refusal) where Self.reportedRefusals.contains(kind):
                refusals.append((r.at, r.action, r.subject, refusal.reason))
            default:
                break
            }
        }
    }

    /// The refusals the report lists (the others are answers to a party's own malformed call).
    static let reportedRefusals: Set<AuditEvent.Refusal.Kind> = [.connection, .call, .upload, .update, .enrolment, .monitor]

    private mutating func noteDeployment(_ event: AuditEvent, _ r: AuditRecord) {
        func index(_ id: Int) -> Int? { deployments.lastIndex { $0.id == id } }
        switch event {
        case .deploymentStarted(let s):
            deployments.append(Deployment(id: s.deployment, version: s.version, stage: s.stage, silos: s.silos, by: r.actor, at: r.at,
                                          maxPSI: s.maxPSI, minAccuracy: s.minAccuracy, watch: s.watch))
        case .monitorChecked(let c):
            let worst = c.psi.max { $0.value < $1.value }.map { Deployment.Worst(column: $0.key, psi: $0.value, p: c.pValues?[$0.key]) }
            if let i = index(c.deployment) {
                deployments[i].checks.append(.init(silo: r.subject, version: c.version, accuracy: c.accuracy, worst: worst, reasons: c.reasons, at: r.at))
            }
        case .deploymentAlert(let a):
            deploymentAlerts.append(DeploymentAlert(deployment: a.deployment, version: a.version, silo: r.subject, reasons: a.reasons, back: a.back, at: r.at))
        case .deploymentRolledBack(let b):
            if let i = index(b.deployment) { deployments[i].rollbackSeconds = b.seconds }
        default:
            break
        }
    }

    /// Keeps the latest state of a round and who took part in it (an aborted round: nobody).
    private mutating func note(_ round: Round, _ index: inout [String: Int]) {
        let key = "\(round.plan)/\(round.run)/\(round.number)"
        guard let i = index[key] else {
            index[key] = rounds.count
            rounds.append(round)
            return
        }
        let kept = round.state == "aborted" ? round.participants : (round.participants.isEmpty ? rounds[i].participants : round.participants)
        rounds[i] = Round(plan: round.plan, run: round.run, number: round.number, state: round.state, participants: kept, at: round.at,
                          reason: round.reason ?? rounds[i].reason, traffic: rounds[i].traffic)
    }

    /// Cumulative committed ε per data set at a silo, from its ledger's records: the reservation
    /// carries the DP event, the commit settles it; ε is the accountant's for all events committed so
    /// far, at the data set's δ. Caps: the data set's per-plan and lifetime caps as recorded.
    static func epsilonSeries(_ records: [Decoded], source: String, filter: AuditFilter) -> [EpsilonSeries] {
        var events: [String: (dataset: String, event: DPEvent)] = [:]
        var delta: [String: Double] = [:], cap: [String: Double] = [:], perPlan: [String: Double] = [:]
        var committed: [String: [DPEvent]] = [:], points: [String: [EpsilonPoint]] = [:]
        var silo: [String: String] = [:]
        for (r, decoded) in records {
            guard case .success(let event) = decoded else { continue }
            switch event {
            case .budgetSet(let b):
                delta[b.dataset] = b.delta
                cap[b.dataset] = b.lifetimeCap ?? b.perPlanCap
                perPlan[b.dataset] = b.perPlanCap
            case .budgetReserved(let e):
                if let dp = try? DPEvent.fromJSON(e.event) { events[e.id] = (e.dataset, dp) }
            case .budgetSettled(let s) where s.state == .committed:
                guard let (dataset, event) = events[s.id], let d = delta[dataset] else { continue }
                committed[dataset, default: []].append(event)
                silo[dataset] = r.actor
                guard filter.keeps(r) else { continue }
                if let e = try? FedGatePrivacy.epsilon(of: DPEvent.composed(committed[dataset]!), delta: d) { points[dataset, default: []].append(EpsilonPoint(at: r.at, epsilon: e)) }
            default:
                break
            }
        }
        return points.keys.sorted().map { dataset in
            EpsilonSeries(silo: silo[dataset] ?? source, dataset: dataset, cap: cap[dataset], perPlanCap: perPlan[dataset], points: points[dataset]!)
        }
    }
}
