import FedGatePrivacy
import Foundation

extension LedgerState {
    /// A state as stored; any other text is an edit made outside FedGate.
    init(stored: String) throws {
        guard let state = LedgerState(rawValue: stored) else {
            throw LedgerError.storage("a ledger entry's state is '\(stored.prefix(32))', not reserved, committed or released: the store was changed outside FedGate")
        }
        self = state
    }
}

/// The ledger as the audit chain says it must be. Every change to the ledger appends its record in
/// the same transaction (`ledger.budget`, `ledger.reserve` with the DP event, `ledger.commit`,
/// `ledger.release`), so replaying the chain gives every data set's caps and every entry's event
/// and state; a table row that differs was edited outside FedGate, and this names it with the
/// record it contradicts. Pure: the chain and the tables in, the differences out.
public enum LedgerReplay {
    struct Entry {
        var dataset: String, plan: String, round: Int, event: String, state: LedgerState, seq: Int
    }

    /// Every difference between the tables and the replayed chain, in words; empty when they agree.
    public static func differences(records: [AuditRecord], budgets: [DatasetBudget], entries: [LedgerEntry]) -> [String] {
        var caps: [String: (budget: DatasetBudget, seq: Int)] = [:]
        var expected: [String: Entry] = [:]
        var out: [String] = []
        for r in records where r.action.hasPrefix("ledger.") {
            let event: AuditEvent
            switch AuditEvent.of(r) {
            case .success(let e): event = e
            case .failure(let error):
                out.append("record \(r.seq) (\(r.action)) does not read back: \(error.problem)")
                continue
            }
            switch event {
            case .budgetSet(let b):
                caps[b.dataset] = (b.caps, r.seq)
            case .budgetReserved(let e):
                expected[e.id] = Entry(dataset: e.dataset, plan: e.plan, round: e.round, event: e.event, state: .reserved, seq: r.seq)
            case .budgetSettled(let s):
                guard expected[s.id] != nil else {
                    out.append("record \(r.seq) settles entry \(s.id), which no record reserved")
                    continue
                }
                expected[s.id]!.state = s.state
                expected[s.id]!.seq = r.seq
            default:
                continue
            }
        }
        out += budgetDifferences(caps, budgets)
        out += entryDifferences(expected, entries)
        return out
    }

    static func budgetDifferences(_ caps: [String: (budget: DatasetBudget, seq: Int)], _ budgets: [DatasetBudget]) -> [String] {
        var out: [String] = []
        let stored = Dictionary(budgets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for b in budgets.sorted(by: { $0.name < $1.name }) {
            guard let (want, seq) = caps[b.name] else {
                out.append("data set '\(b.name)' has caps in the ledger that no record set")
                continue
            }
            for (field, have, should) in [("delta", b.delta, want.delta), ("per_plan_cap", b.perPlanCap, want.perPlanCap),
                                           ("window_cap", b.windowCap ?? -1, want.windowCap ?? -1), ("lifetime_cap", b.lifetimeCap ?? -1, want.lifetimeCap ?? -1),
                                           ("window_days", Double(b.windowDays ?? -1), Double(want.windowDays ?? -1))] where !same(have, should) {
                out.append("data set '\(b.name)': \(field) is \(show(have)) in the ledger, \(show(should)) as record \(seq) set it")
            }
        }
        for name in caps.keys.sorted() where stored[name] == nil {
            out.append("data set '\(name)' (caps set by record \(caps[name]!.seq)) is missing from the ledger")
        }
        return out
    }

    static func entryDifferences(_ expected: [String: Entry], _ entries: [LedgerEntry]) -> [String] {
        var out: [String] = []
        var seen = Set<String>()
        for e in entries {
            seen.insert(e.id)
            guard let want = expected[e.id] else {
                out.append("ledger entry \(e.id) (data set '\(e.dataset)') is in the ledger, but no record reserved it")
                continue
            }
            if e.dataset != want.dataset || e.planHash != want.plan || e.round != want.round {
                out.append("ledger entry \(e.id): data set, plan or round differ from record \(want.seq)")
            }
            if (try? e.event.canonicalJSON()) != canonical(want.event) {
                out.append("ledger entry \(e.id): its DP event differs from the one reserved by the chain (now \(((try? e.event.canonicalJSON()) ?? "?").prefix(120)))")
            }
            if e.state != want.state {
                out.append("ledger entry \(e.id): state is \(e.state.rawValue) in the ledger, \(want.state.rawValue) as record \(want.seq) left it")
            }
        }
        for id in expected.keys.sorted() where !seen.contains(id) {
            out.append("ledger entry \(id) (recorded up to record \(expected[id]!.seq)) is missing from the ledger")
        }
        return out
    }

    static func canonical(_ json: String) -> String? { try? DPEvent.fromJSON(json).canonicalJSON() }

    static func same(_ a: Double, _ b: Double) -> Bool { a == b || abs(a - b) <= 1e-12 * max(abs(a), abs(b)) }

    static func show(_ v: Double) -> String { v == -1 ? "none" : "\(v)" }
}
