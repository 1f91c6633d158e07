import FedGatePrivacy
import Foundation

extension ComplianceReport {
    /// What left one silo for one plan, in two lists kept apart: the releases its ledger committed
    /// as DP events (each distinct event with how many times, the statistics release told apart
    /// from the rounds), and what its policy let leave without DP when it decided on the plan.
    public struct Releases: Sendable, Equatable {
        public let silo: String, plan: String
        /// `(what, DP event as canonical JSON, times)`, in the order first committed.
        public var withDP: [(what: String, event: String, count: Int)]
        /// The policy's `releases.without_dp`, and the final evaluation's multiplier when it leaves with DP.
        public var withoutDP: [String]
        public var evaluationNoiseMultiplier: Double?

        public static func == (a: Releases, b: Releases) -> Bool {
            a.silo == b.silo && a.plan == b.plan && a.withoutDP == b.withoutDP && a.evaluationNoiseMultiplier == b.evaluationNoiseMultiplier
                && a.withDP.map { "\($0.what)|\($0.event)|\($0.count)" } == b.withDP.map { "\($0.what)|\($0.event)|\($0.count)" }
        }
    }

    /// The releases per (silo, plan) in one silo's trail: its policy decisions and its ledger's
    /// commits (a reservation names the plan, round and event; its commit makes it a release).
    static func releases(_ records: [Decoded], filter: AuditFilter) -> [Releases] {
        var found: [Releases] = []
        func at(_ silo: String, _ plan: String) -> Int {
            if let i = found.firstIndex(where: { $0.silo == silo && $0.plan == plan }) { return i }
            found.append(Releases(silo: silo, plan: plan, withDP: [], withoutDP: [], evaluationNoiseMultiplier: nil))
            return found.count - 1
        }
        // A commit names only its reservation: the reservation's record (its plan) decides whether it is kept.
        var reserved: [String: (entry: AuditEvent.Reservation, kept: Bool)] = [:]
        for (r, decoded) in records {
            guard case .success(let event) = decoded else { continue }
            switch event {
            case .policyDecision(let d) where filter.keeps(r):
                guard let listed = d.releasedWithoutDP else { continue }
                let i = at(d.silo, r.subject)
                (found[i].withoutDP, found[i].evaluationNoiseMultiplier) = (listed, d.evaluationNoiseMultiplier)
            case .budgetReserved(let e):
                reserved[e.id] = (e, filter.keeps(r))
            case .budgetSettled(let s) where s.state == .committed:
                guard let (e, kept) = reserved[s.id], kept else { continue }
                let i = at(r.actor, e.plan)
                let what = e.round == 0 ? "statistics release" : (try? DPEvent.fromJSON(e.event)).map(Self.kind) ?? "round"
                if let k = found[i].withDP.firstIndex(where: { $0.what == what && $0.event == e.event }) {
                    found[i].withDP[k].count += 1
                } else {
                    found[i].withDP.append((what, e.event, 1))
                }
            default:
                break
            }
        }
        return found
    }

    /// A round's DP event by what released it: DP-SGD updates, or a Gaussian release (a silo's own
    /// program's update, or a final evaluation with DP).
    static func kind(_ event: DPEvent) -> String {
        if case .selfComposed(.poissonSampled, _) = event { return "DP-SGD updates" }
        if case .gaussian = event { return "Gaussian releases (program updates, evaluations)" }
        return "round releases"
    }
}
