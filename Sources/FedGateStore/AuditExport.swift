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
                lines.append(try line(["type": "record", "source": t.source, "seq": r.seq, "at": timestamp(r.at), "actor": r.actor,
                                       "action": r.action, "subject": r.subject, "payload": payload, "previous_hash": r.previousHash, "hash": r.hash]))
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
    public struct Plan: Sendable, Equatable { public let hash: String, purpose: String, rounds: Int, strategy: String, submittedBy: String, at: Date }
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
    public struct Round: Sendable, Equatable { public let plan: String, number: Int, state: String, participants: [String], at: Date }
    public struct Gate: Sendable, Equatable {
        public let plan: String, round: Int, passed: Bool, reasons: [String], accuracy: Double?, at: Date
        public let silos: [String: Double]
        /// With personalisation: each silo's own model's accuracy.
        public let personalised: [String: Double]
    }
    public struct Version: Sendable, Equatable { public let version: Int, plan: String, round: Int, contentSHA256: String, at: Date, actor: String, action: String }

    public var chains: [(source: String, verification: AuditVerification, records: Int)] = []
    public var plans: [Plan] = []
    public var consents: [Consent] = []
    public var decisions: [Decision] = []
    public var epsilonSeries: [EpsilonSeries] = []
    public var rounds: [Round] = []
    public var gates: [Gate] = []
    public var versions: [Version] = []
    public var refusals: [(at: Date, action: String, subject: String, reason: String)] = []

    public init(_ trails: [AuditTrail], filter: AuditFilter) {
        for t in trails {
            chains.append((t.source, t.verification, t.records.count))
            let kept = t.records.filter(filter.keeps)
            read(kept, source: t.source)
            epsilonSeries += Self.epsilonSeries(t.records, source: t.source, filter: filter)
        }
        rounds.sort { ($0.plan, $0.number) < ($1.plan, $1.number) }
    }

    private static func object(_ payload: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(payload.utf8))) as? [String: Any] ?? [:]
    }

    private mutating func read(_ records: [AuditRecord], source: String) {
        var roundIndex: [String: Int] = [:]
        for r in records {
            let p = Self.object(r.payload)
            switch r.action {
            case "plan.submit":
                plans.append(Plan(hash: r.subject, purpose: p["purpose"] as? String ?? "", rounds: p["rounds"] as? Int ?? 0,
                                  strategy: p["strategy"] as? String ?? "", submittedBy: r.actor, at: r.at))
            case "consent.add":
                consents.append(Consent(source: source, dataset: p["dataset"] as? String ?? r.subject, purpose: p["purpose"] as? String ?? "",
                                        basis: p["legal_basis"] as? String ?? "", scope: p["scope"] as? String ?? "", withdrawn: false))
            case "policy.decision":
                decisions.append(Decision(silo: p["silo"] as? String ?? r.actor, plan: r.subject, outcome: p["outcome"] as? String ?? "",
                                          reasons: p["reasons"] as? [String] ?? [], at: r.at))
            case let a where a.hasPrefix("round."):
                let number = p["round"] as? Int ?? 0
                let key = "\(r.subject)/\(number)"
                let state = String(a.dropFirst("round.".count))
                let people = (p["survivors"] as? [String]) ?? (p["sampled"] as? [String]) ?? []
                let round = Round(plan: r.subject, number: number, state: state == "abort" ? "aborted" : state, participants: people, at: r.at)
                if let i = roundIndex[key] {
                    // Keep the latest state and who took part in it (an aborted round: nobody).
                    let kept = round.state == "aborted" ? people : (people.isEmpty ? rounds[i].participants : people)
                    rounds[i] = Round(plan: round.plan, number: number, state: round.state, participants: kept, at: r.at)
                } else {
                    roundIndex[key] = rounds.count
                    rounds.append(round)
                }
            case "model.gate":
                var silos: [String: Double] = [:], personalised: [String: Double] = [:]
                for (silo, v) in p["silos"] as? [String: Any] ?? [:] {
                    silos[silo] = (v as? [String: Any])?["accuracy"] as? Double
                    personalised[silo] = (v as? [String: Any])?["personalised_accuracy"] as? Double
                }
                gates.append(Gate(plan: r.subject, round: p["round"] as? Int ?? 0, passed: p["passed"] as? Bool ?? false,
                                  reasons: p["reasons"] as? [String] ?? [], accuracy: p["accuracy"] as? Double, at: r.at, silos: silos,
                                  personalised: personalised))
            case "model.version":
                versions.append(Version(version: p["version"] as? Int ?? 0, plan: r.subject, round: p["round"] as? Int ?? 0,
                                        contentSHA256: p["content_sha256"] as? String ?? "", at: r.at, actor: r.actor, action: "recorded"))
            case "model.rollback":
                versions.append(Version(version: p["to"] as? Int ?? 0, plan: "", round: 0, contentSHA256: "", at: r.at, actor: r.actor, action: "rolled back to"))
            case "connection.refuse", "call.refuse", "update.refuse", "update.reject", "enrolment.refuse":
                refusals.append((r.at, r.action, r.subject, p["reason"] as? String ?? r.payload))
            default:
                break
            }
        }
    }

    /// Cumulative committed ε per data set at a silo, from its ledger's records: the reservation
    /// carries the DP event, the commit settles it; ε is the accountant's for all events committed so
    /// far, at the data set's δ. Caps: the data set's per-plan and lifetime caps as recorded.
    static func epsilonSeries(_ records: [AuditRecord], source: String, filter: AuditFilter) -> [EpsilonSeries] {
        var events: [String: (dataset: String, event: DPEvent)] = [:]
        var delta: [String: Double] = [:], cap: [String: Double] = [:], perPlan: [String: Double] = [:]
        var committed: [String: [DPEvent]] = [:], points: [String: [EpsilonPoint]] = [:]
        var silo: [String: String] = [:]
        for r in records {
            let p = object(r.payload)
            switch r.action {
            case "ledger.budget":
                let name = p["dataset"] as? String ?? r.subject
                delta[name] = p["delta"] as? Double
                cap[name] = (p["lifetime_cap"] as? Double) ?? (p["per_plan_cap"] as? Double)
                perPlan[name] = p["per_plan_cap"] as? Double
            case "ledger.reserve":
                if let id = p["id"] as? String, let dataset = p["dataset"] as? String, let json = p["event"] as? String,
                   let event = try? DPEvent.fromJSON(json) { events[id] = (dataset, event) }
            case "ledger.commit":
                guard let id = p["id"] as? String, let (dataset, event) = events[id], let d = delta[dataset] else { continue }
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
