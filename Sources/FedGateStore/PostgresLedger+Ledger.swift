import FedGatePrivacy
import Foundation
import Logging
import PostgresNIO

// The privacy-budget ledger, consents and the audit chain.
extension PostgresLedger {
    public func save(_ b: DatasetBudget, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { conn in
            try await conn.query("""
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap)
                VALUES (\(b.name), \(b.delta), \(b.perPlanCap), \(b.windowDays), \(b.windowCap), \(b.lifetimeCap))
                ON CONFLICT (name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """, logger: logger)
            return (b.name, .budgetSet(.init(b)))
        }
    }

    public func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws {
        let json = try entry.event.canonicalJSON()
        try await audited(actor: actor, at: now) { conn in
            var budget: DatasetBudget?
            for try await (name, delta, perPlan, days, windowCap, lifetime) in try await conn.query(
                "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets WHERE name = \(entry.dataset) FOR UPDATE",
                logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                budget = DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime)
            }
            guard let budget else { throw LedgerError.unknownDataset(entry.dataset) }
            let active = try await Self.entries(conn, dataset: entry.dataset, logger: logger).filter { $0.state != .released }
            try BudgetCheck.check(budget, active: active, adding: entry, now: now)
            try await conn.query("""
                INSERT INTO ledger_entries (id, dataset, plan_hash, round, event, state, created_at, settled_at)
                VALUES (\(entry.id), \(entry.dataset), \(entry.planHash), \(entry.round), \(json), 'reserved', \(entry.createdAt.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (entry.dataset, .budgetReserved(.init(id: entry.id, dataset: entry.dataset, plan: entry.planHash, round: entry.round, event: json)))
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var current: String?, dataset = ""
            for try await (s, d) in try await conn.query("SELECT state, dataset FROM ledger_entries WHERE id = \(id) FOR UPDATE", logger: logger).decode((String, String).self) {
                current = s
                dataset = d
            }
            guard let current else { throw LedgerError.unknownReservation(id) }
            guard current == LedgerState.reserved.rawValue else {
                throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
            }
            guard state != .reserved else { throw LedgerError.notASettlement(id: id) }
            try await conn.query("UPDATE ledger_entries SET state = \(state.rawValue), settled_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (dataset, .budgetSettled(.init(id: id, state: state)))
        }
    }

    public func auditTail() async throws -> (seq: Int, hash: String)? {
        try await wrap {
            var tail: (seq: Int, hash: String)?
            for try await (seq, hash) in try await client.query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1", logger: logger)
                .decode((Int, String).self) { tail = (seq, hash) }
            return tail
        }
    }

    public func record(_ h: AuditHead) async throws {
        try await wrap {
            try await client.query("""
                INSERT INTO audit_heads (signer, seq, hash, at, certificate, signature)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at.timeIntervalSince1970), \(h.certificate), \(h.signature))
                ON CONFLICT (signer, seq) DO NOTHING
                """, logger: logger)
        }
    }

    public func auditHeads() async throws -> [AuditHead] {
        try await wrap {
            try await heads("SELECT signer, seq, hash, at, certificate, signature FROM audit_heads ORDER BY at, signer, seq")
        }
    }

    public func witness(_ h: AuditHead, receivedAt: Date) async throws {
        try await wrap {
            try await client.query("""
                INSERT INTO audit_witnessed (signer, seq, hash, at, certificate, signature, received_at)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at.timeIntervalSince1970), \(h.certificate), \(h.signature), \(receivedAt.timeIntervalSince1970))
                ON CONFLICT (signer, seq) DO NOTHING
                """, logger: logger)
        }
    }

    public func witnessedHeads(signer: String?) async throws -> [AuditHead] {
        try await wrap {
            let query: PostgresQuery = signer.map {
                "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed WHERE signer = \($0) ORDER BY at, seq"
            } ?? "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed ORDER BY at, signer, seq"
            return try await heads(query)
        }
    }

    /// Signed heads selected as (signer, seq, hash, at, certificate, signature).
    func heads(_ query: PostgresQuery) async throws -> [AuditHead] {
        var out: [AuditHead] = []
        for try await (signer, seq, hash, at, certificate, signature) in try await client.query(query, logger: logger)
            .decode((String, Int, String, Double, String, String).self) {
            out.append(AuditHead(signer: signer, seq: seq, hash: hash, at: Date(timeIntervalSince1970: at), certificate: certificate, signature: signature))
        }
        return out
    }

    public func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry]) {
        try await wrap {
            try await client.withConnection { conn in
                var budgets: [DatasetBudget] = []
                for try await (name, delta, perPlan, days, windowCap, lifetime) in try await conn.query(
                    "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets ORDER BY name",
                    logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                    budgets.append(DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime))
                }
                return (budgets, try await Self.entries(conn, dataset: nil, logger: logger))
            }
        }
    }

    public func budget(_ dataset: String) async throws -> DatasetBudget? {
        try await wrap {
            var budget: DatasetBudget?
            for try await (name, delta, perPlan, days, windowCap, lifetime) in try await client.query(
                "SELECT name, delta, per_plan_cap, window_days, window_cap, lifetime_cap FROM datasets WHERE name = \(dataset)",
                logger: logger).decode((String, Double, Double, Int?, Double?, Double?).self) {
                budget = DatasetBudget(name: name, delta: delta, perPlanCap: perPlan, windowDays: days, windowCap: windowCap, lifetimeCap: lifetime)
            }
            return budget
        }
    }

    public func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { _ in (subject, event) }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await wrap {
            var out: [AuditRecord] = []
            for try await (seq, at, actor, action, subject, payload, prev, hash) in try await client.query(
                "SELECT seq, at, actor, action, subject, payload, previous_hash, hash FROM audit_records ORDER BY seq", logger: logger)
                .decode((Int, Double, String, String, String, String, String, String).self) {
                out.append(AuditRecord(seq: seq, at: Date(timeIntervalSince1970: at), actor: actor, action: action, subject: subject,
                                       payload: payload, previousHash: prev, hash: hash))
            }
            return out
        }
    }

    public func addConsent(_ c: ConsentRecord, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { conn in
            try await conn.query("""
                INSERT INTO consents (id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at)
                VALUES (\(c.id), \(c.dataset), \(c.purpose), \(c.legalBasis), \(c.scope), \(c.validFrom.timeIntervalSince1970), \(c.validUntil?.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (c.dataset, .consentAdded(.init(c)))
        }
    }

    public func withdrawConsent(id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var dataset: String?
            for try await d in try await conn.query("SELECT dataset FROM consents WHERE id = \(id) AND withdrawn_at IS NULL FOR UPDATE", logger: logger).decode(String.self) {
                dataset = d
            }
            guard let dataset else { throw LedgerError.storage("no active consent '\(id)' to withdraw") }
            try await conn.query("UPDATE consents SET withdrawn_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (dataset, .consentWithdrawn(.init(id: id)))
        }
    }

    public func consents(dataset: String) async throws -> [ConsentRecord] {
        try await wrap {
            var out: [ConsentRecord] = []
            for try await (id, ds, purpose, basis, scope, from, until, withdrawn) in try await client.query(
                "SELECT id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at FROM consents WHERE dataset = \(dataset) ORDER BY valid_from, id",
                logger: logger).decode((String, String, String, String, String, Double, Double?, Double?).self) {
                out.append(ConsentRecord(id: id, dataset: ds, purpose: purpose, legalBasis: basis, scope: scope,
                                         validFrom: Date(timeIntervalSince1970: from), validUntil: until.map(Date.init(timeIntervalSince1970:)),
                                         withdrawnAt: withdrawn.map(Date.init(timeIntervalSince1970:))))
            }
            return out
        }
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await wrap { try await client.withConnection { conn in try await Self.entries(conn, dataset: dataset, logger: logger) } }
    }

    /// One data set's entries, or every entry (`dataset` nil).
    static func entries(_ conn: PostgresConnection, dataset: String?, logger: Logger) async throws -> [LedgerEntry] {
        var out: [LedgerEntry] = []
        let query: PostgresQuery = dataset.map {
            "SELECT id, dataset, plan_hash, round, event, state, created_at, settled_at FROM ledger_entries WHERE dataset = \($0) ORDER BY created_at, id"
        } ?? "SELECT id, dataset, plan_hash, round, event, state, created_at, settled_at FROM ledger_entries ORDER BY created_at, id"
        let rows = try await conn.query(query, logger: logger)
        for try await (id, ds, plan, round, event, state, created, settled) in rows.decode((String, String, String, Int, String, String, Double, Double?).self) {
            out.append(LedgerEntry(id: id, dataset: ds, planHash: plan, round: round, event: try DPEvent.fromJSON(event),
                                   state: try LedgerState(stored: state), createdAt: Date(timeIntervalSince1970: created),
                                   settledAt: settled.map(Date.init(timeIntervalSince1970:))))
        }
        return out
    }
}
