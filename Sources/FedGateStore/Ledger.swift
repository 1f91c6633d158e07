import FedGatePrivacy
import Foundation

/// Where a ledger entry stands: reserved before training, then committed or released.
public enum LedgerState: String, Sendable, Codable { case reserved, committed, released }

/// One privacy spend of one data set, as DP events — never as a bare ε.
public struct LedgerEntry: Sendable, Equatable {
    public let id: String
    public let dataset: String
    public let planHash: String
    public let round: Int
    public let event: DPEvent
    public var state: LedgerState
    public let createdAt: Date
    public var settledAt: Date?
}

/// A data set's privacy-budget caps, all at δ = `delta`.
public struct DatasetBudget: Sendable, Equatable {
    public let name: String
    public let delta: Double
    public let perPlanCap: Double
    public let windowDays: Int?
    public let windowCap: Double?
    public let lifetimeCap: Double?

    public init(name: String, delta: Double, perPlanCap: Double, windowDays: Int? = nil, windowCap: Double? = nil, lifetimeCap: Double? = nil) {
        self.name = name
        self.delta = delta
        self.perPlanCap = perPlanCap
        self.windowDays = windowDays
        self.windowCap = windowCap
        self.lifetimeCap = lifetimeCap
    }
}

/// Why the ledger refused or failed; names the data set, reservation or cap.
public enum LedgerError: Error, Sendable, Equatable, CustomStringConvertible {
    case budgetExceeded(dataset: String, cap: String, epsilon: Double, limit: Double)
    case unknownDataset(String)
    case unknownReservation(String)
    case alreadySettled(id: String, state: LedgerState)
    /// A settlement to `reserved`: an entry settles to committed or released.
    case notASettlement(id: String)
    case migration(String)
    case storage(String)
    /// The database could not be reached (down, restarting, connection lost): nothing was written,
    /// and the same call may be tried again.
    case unavailable(String)

    public var description: String {
        switch self {
        case .budgetExceeded(let d, let cap, let e, let limit):
            return String(format: "reservation refused: the %@ ε of data set '%@' would reach %.4f, above its cap %.4f", cap, d, e, limit)
        case .unknownDataset(let d): return "data set '\(d)' has no budget in the ledger; register its caps first"
        case .unknownReservation(let id): return "no reservation '\(id)' in the ledger"
        case .alreadySettled(let id, let s): return "reservation '\(id)' is already \(s.rawValue); it can be settled only once"
        case .notASettlement(let id): return "reservation '\(id)' can be settled only to committed or released"
        case .migration(let m): return "migration: \(m)"
        case .storage(let m): return "storage: \(m)"
        case .unavailable(let m): return "storage unavailable: \(m)"
        }
    }
}

/// The cap check, shared by every backend and run inside their serialised transaction: ε of the
/// active (reserved and committed) events plus the new one, per plan, in the window and ever.
public enum BudgetCheck {
    public static func check(_ budget: DatasetBudget, active: [LedgerEntry], adding new: LedgerEntry, now: Date) throws {
        func eps(_ entries: [LedgerEntry]) throws -> Double {
            try epsilon(of: .composed(entries.map(\.event) + [new.event]), delta: budget.delta)
        }
        let samePlan = try eps(active.filter { $0.planHash == new.planHash })
        if samePlan > budget.perPlanCap {
            throw LedgerError.budgetExceeded(dataset: budget.name, cap: "per-plan", epsilon: samePlan, limit: budget.perPlanCap)
        }
        if let days = budget.windowDays, let cap = budget.windowCap {
            let inWindow = try eps(budget.inWindow(active, at: now))
            if inWindow > cap { throw LedgerError.budgetExceeded(dataset: budget.name, cap: "\(days)-day", epsilon: inWindow, limit: cap) }
        }
        if let cap = budget.lifetimeCap {
            let ever = try eps(active)
            if ever > cap { throw LedgerError.budgetExceeded(dataset: budget.name, cap: "lifetime", epsilon: ever, limit: cap) }
        }
    }
}

extension DatasetBudget {
    /// The entries its rolling window counts at `now` (all of them when it has no window).
    public func inWindow(_ entries: [LedgerEntry], at now: Date) -> [LedgerEntry] {
        guard let days = windowDays else { return entries }
        let since = now.addingTimeInterval(-Double(days) * 86_400)
        return entries.filter { $0.createdAt >= since }
    }
}

extension LedgerEntry {
    /// ε of these entries' events composed, at δ (0 for none).
    public static func epsilon(of entries: [LedgerEntry], delta: Double) throws -> Double {
        entries.isEmpty ? 0 : try FedGatePrivacy.epsilon(of: .composed(entries.map(\.event)), delta: delta)
    }
}

/// Where a data set stands, from its entries (no I/O): ε committed, ε committed and reserved, and
/// what is left under its lifetime cap and its rolling window's (released entries count for nothing).
public struct BudgetStanding: Sendable, Equatable {
    public let committed: Double
    public let withReserved: Double
    public let lifetimeRemaining: Double?
    public let windowRemaining: Double?

    public init(_ budget: DatasetBudget, entries: [LedgerEntry], at now: Date) throws {
        let held = entries.filter { $0.state != .released }
        committed = try LedgerEntry.epsilon(of: entries.filter { $0.state == .committed }, delta: budget.delta)
        withReserved = try LedgerEntry.epsilon(of: held, delta: budget.delta)
        lifetimeRemaining = budget.lifetimeCap.map { [withReserved] in max(0, $0 - withReserved) }
        windowRemaining = try budget.windowCap.map { max(0, $0 - (try LedgerEntry.epsilon(of: budget.inWindow(held, at: now), delta: budget.delta))) }
    }
}

/// The schema: numbered migrations, each applied once, in order, by one migrator at a time.
public protocol SchemaMigrations: Sendable {
    func applyMigrations(_ migrations: [Migration]) async throws -> [String]
}

/// The privacy budget of each data set: its caps and its two-phase entries. `reserve` must run the
/// cap check and the insert in one transaction that no other reservation of the same data set can
/// interleave with; every change appends its audit record in the same transaction (no change
/// without its record, no record without its change).
public protocol BudgetLedgerStore: Sendable {
    func save(_ budget: DatasetBudget, actor: String) async throws
    func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws
    func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws
    func entries(dataset: String) async throws -> [LedgerEntry]
    func budget(_ dataset: String) async throws -> DatasetBudget?
    /// Every data set's caps and every ledger entry, as the tables hold them (for `LedgerReplay`).
    func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry])
}

extension BudgetLedgerStore {
    public func save(_ budget: DatasetBudget) async throws { try await save(budget, actor: "system") }
}

/// The hash-chained audit trail and the signed heads that witness it. Appends are serialised so the
/// chain never forks.
public protocol AuditLog: Sendable {
    /// Appends one audit record (for decisions that change nothing else in the store).
    func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws
    func auditRecords() async throws -> [AuditRecord]
    /// The sequence and hash of the chain's last record (nil: no record yet).
    func auditTail() async throws -> (seq: Int, hash: String)?
    /// Keeps a signed head of this store's own chain.
    func record(_ head: AuditHead) async throws
    /// Every signed head of this store's own chain, oldest first.
    func auditHeads() async throws -> [AuditHead]
    /// Keeps another party's signed head, received from it (checked by the caller).
    func witness(_ head: AuditHead, receivedAt: Date) async throws
    /// Other parties' heads this store witnessed (all, or one signer's), oldest first.
    func witnessedHeads(signer: String?) async throws -> [AuditHead]
}

/// The consent registry: which consents cover each data set, and their withdrawals (audited).
public protocol ConsentRegistry: Sendable {
    func addConsent(_ consent: ConsentRecord, actor: String) async throws
    func withdrawConsent(id: String, at: Date, actor: String) async throws
    func consents(dataset: String) async throws -> [ConsentRecord]
}

/// What a silo's ledger keeps: the schema, the budget ledger, the audit log and the consents.
public typealias LedgerBackend = SchemaMigrations & BudgetLedgerStore & AuditLog & ConsentRegistry

/// The two-phase privacy-budget ledger: reserve before training, commit or release after.
public struct PrivacyLedger: Sendable {
    public let backend: any LedgerBackend

    public init(backend: any LedgerBackend) { self.backend = backend }

    /// Reserves `event` for a plan's round; refused if any cap would be exceeded.
    public func reserve(_ event: DPEvent, dataset: String, plan: String, round: Int, now: Date = Date(), actor: String = "system") async throws -> String {
        try event.validate()
        let entry = LedgerEntry(id: UUID().uuidString.lowercased(), dataset: dataset, planHash: plan, round: round,
                                event: event, state: .reserved, createdAt: now, settledAt: nil)
        try await backend.reserve(entry, now: now, actor: actor)
        return entry.id
    }

    public func commit(_ id: String, at: Date = Date(), actor: String = "system") async throws {
        try await backend.settle(id: id, to: .committed, at: at, actor: actor)
    }

    public func release(_ id: String, at: Date = Date(), actor: String = "system") async throws {
        try await backend.settle(id: id, to: .released, at: at, actor: actor)
    }

    /// ε committed, ε committed + reserved, at the data set's δ.
    public func spent(dataset: String, delta: Double) async throws -> (committed: Double, withReserved: Double) {
        let all = try await backend.entries(dataset: dataset)
        return (try LedgerEntry.epsilon(of: all.filter { $0.state == .committed }, delta: delta),
                try LedgerEntry.epsilon(of: all.filter { $0.state != .released }, delta: delta))
    }
}
