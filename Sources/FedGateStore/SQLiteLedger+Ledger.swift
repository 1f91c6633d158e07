import FedGatePrivacy
import Foundation
import GRDB

// The privacy-budget ledger, consents and the audit chain.
extension SQLiteLedger {
    public func save(_ b: DatasetBudget, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { db in
            try db.execute(sql: """
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """, arguments: [b.name, b.delta, b.perPlanCap, b.windowDays, b.windowCap, b.lifetimeCap])
            return (b.name, .budgetSet(.init(b)))
        }
    }

    public func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws {
        try await audited(actor: actor, at: now) { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM datasets WHERE name = ?", arguments: [entry.dataset]) else {
                throw LedgerError.unknownDataset(entry.dataset)
            }
            let budget = try Self.budget(row)
            let active = try Self.entries(db, dataset: entry.dataset).filter { $0.state != .released }
            try BudgetCheck.check(budget, active: active, adding: entry, now: now)
            let json = try entry.event.canonicalJSON()
            try db.execute(sql: """
                INSERT INTO ledger_entries (id, dataset, plan_hash, round, event, state, created_at, settled_at)
                VALUES (?, ?, ?, ?, ?, 'reserved', ?, NULL)
                """, arguments: [entry.id, entry.dataset, entry.planHash, entry.round, json, entry.createdAt.timeIntervalSince1970])
            return (entry.dataset, .budgetReserved(.init(id: entry.id, dataset: entry.dataset, plan: entry.planHash, round: entry.round, event: json)))
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let current = try String.fetchOne(db, sql: "SELECT state FROM ledger_entries WHERE id = ?", arguments: [id]) else {
                throw LedgerError.unknownReservation(id)
            }
            guard current == LedgerState.reserved.rawValue else {
                throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
            }
            guard state != .reserved else { throw LedgerError.notASettlement(id: id) }
            try db.execute(sql: "UPDATE ledger_entries SET state = ?, settled_at = ? WHERE id = ? AND state = 'reserved'",
                           arguments: [state.rawValue, at.timeIntervalSince1970, id])
            let dataset = try String.fetchOne(db, sql: "SELECT dataset FROM ledger_entries WHERE id = ?", arguments: [id]) ?? ""
            return (dataset, .budgetSettled(.init(id: id, state: state)))
        }
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await wrap { try await pool.read { db in try Self.entries(db, dataset: dataset) } }
    }

    public func auditTail() async throws -> (seq: Int, hash: String)? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").map { (try $0.field("seq"), try $0.field("hash")) }
            }
        }
    }

    public func record(_ h: AuditHead) async throws {
        try await wrap {
            try await write { db in
                try db.execute(sql: """
                    INSERT INTO audit_heads (signer, seq, hash, at, certificate, signature) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (signer, seq) DO NOTHING
                    """, arguments: [h.signer, h.seq, h.hash, h.at.timeIntervalSince1970, h.certificate, h.signature])
            }
        }
    }

    public func auditHeads() async throws -> [AuditHead] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM audit_heads ORDER BY at, signer, seq").map { r in
                    try Self.head(r)
                }
            }
        }
    }

    public func witness(_ h: AuditHead, receivedAt: Date) async throws {
        try await wrap {
            try await write { db in
                try db.execute(sql: """
                    INSERT INTO audit_witnessed (signer, seq, hash, at, certificate, signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (signer, seq) DO NOTHING
                    """, arguments: [h.signer, h.seq, h.hash, h.at.timeIntervalSince1970, h.certificate, h.signature, receivedAt.timeIntervalSince1970])
            }
        }
    }

    public func witnessedHeads(signer: String?) async throws -> [AuditHead] {
        try await wrap {
            try await pool.read { db in
                let rows = try signer.map { try Row.fetchAll(db, sql: "SELECT * FROM audit_witnessed WHERE signer = ? ORDER BY at, seq", arguments: [$0]) }
                    ?? Row.fetchAll(db, sql: "SELECT * FROM audit_witnessed ORDER BY at, signer, seq")
                return try rows.map { r in
                    try Self.head(r)
                }
            }
        }
    }

    public func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry]) {
        try await wrap {
            try await pool.read { db in
                let budgets = try Row.fetchAll(db, sql: "SELECT * FROM datasets ORDER BY name").map { row in
                    try Self.budget(row)
                }
                return (budgets, try Self.entries(db, dataset: nil))
            }
        }
    }

    public func budget(_ dataset: String) async throws -> DatasetBudget? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM datasets WHERE name = ?", arguments: [dataset]).map { row in
                    try Self.budget(row)
                }
            }
        }
    }

    public func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { _ in (subject, event) }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM audit_records ORDER BY seq").map { r in
                    AuditRecord(seq: try r.field("seq"), at: Date(timeIntervalSince1970: try r.field("at")), actor: try r.field("actor"), action: try r.field("action"),
                                subject: try r.field("subject"), payload: try r.field("payload"), previousHash: try r.field("previous_hash"), hash: try r.field("hash"))
                }
            }
        }
    }

    public func addConsent(_ c: ConsentRecord, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { db in
            try db.execute(sql: """
                INSERT INTO consents (id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
                """, arguments: [c.id, c.dataset, c.purpose, c.legalBasis, c.scope, c.validFrom.timeIntervalSince1970,
                                 c.validUntil?.timeIntervalSince1970])
            return (c.dataset, .consentAdded(.init(c)))
        }
    }

    public func withdrawConsent(id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let dataset = try String.fetchOne(db, sql: "SELECT dataset FROM consents WHERE id = ? AND withdrawn_at IS NULL", arguments: [id]) else {
                throw LedgerError.storage("no active consent '\(id)' to withdraw")
            }
            try db.execute(sql: "UPDATE consents SET withdrawn_at = ? WHERE id = ?", arguments: [at.timeIntervalSince1970, id])
            return (dataset, .consentWithdrawn(.init(id: id)))
        }
    }

    public func consents(dataset: String) async throws -> [ConsentRecord] {
        try await wrap {
            try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM consents WHERE dataset = ? ORDER BY valid_from, id", arguments: [dataset]).map { r in
                    let until: Double? = try r.field("valid_until"), withdrawn: Double? = try r.field("withdrawn_at")
                    return ConsentRecord(id: try r.field("id"), dataset: try r.field("dataset"), purpose: try r.field("purpose"), legalBasis: try r.field("legal_basis"),
                                         scope: try r.field("scope"), validFrom: Date(timeIntervalSince1970: try r.field("valid_from")),
                                         validUntil: until.map(Date.init(timeIntervalSince1970:)),
                                         withdrawnAt: withdrawn.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }

    /// A `datasets` row.
    static func budget(_ row: Row) throws -> DatasetBudget {
        DatasetBudget(name: try row.field("name"), delta: try row.field("delta"), perPlanCap: try row.field("per_plan_cap"),
                      windowDays: try row.field("window_days"), windowCap: try row.field("window_cap"), lifetimeCap: try row.field("lifetime_cap"))
    }

    /// An `audit_heads` or `audit_witnessed` row.
    static func head(_ r: Row) throws -> AuditHead {
        AuditHead(signer: try r.field("signer"), seq: try r.field("seq"), hash: try r.field("hash"), at: Date(timeIntervalSince1970: try r.field("at")),
                  certificate: try r.field("certificate"), signature: try r.field("signature"))
    }

    /// One data set's entries, or every entry (`dataset` nil).
    static func entries(_ db: Database, dataset: String?) throws -> [LedgerEntry] {
        let rows = try dataset.map { try Row.fetchAll(db, sql: "SELECT * FROM ledger_entries WHERE dataset = ? ORDER BY created_at, id", arguments: [$0]) }
            ?? Row.fetchAll(db, sql: "SELECT * FROM ledger_entries ORDER BY created_at, id")
        return try rows.map { row in
            let settled: Double? = try row.field("settled_at")
            return LedgerEntry(id: try row.field("id"), dataset: try row.field("dataset"), planHash: try row.field("plan_hash"), round: try row.field("round"),
                               event: try DPEvent.fromJSON(try row.field("event")),
                               state: try LedgerState(stored: try row.field("state")),
                               createdAt: Date(timeIntervalSince1970: try row.field("created_at")),
                               settledAt: settled.map(Date.init(timeIntervalSince1970:)))
        }
    }
}
