import FedGatePrivacy
import Foundation

/// The privacy-budget ledger, consents and the audit chain, once for both backends.
extension SQLStore {
    public func save(_ b: DatasetBudget, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { tx in
            try await tx.execute("""
                INSERT INTO datasets (name, delta, per_plan_cap, window_days, window_cap, lifetime_cap)
                VALUES (\(b.name), \(b.delta), \(b.perPlanCap), \(b.windowDays), \(b.windowCap), \(b.lifetimeCap))
                ON CONFLICT (name) DO UPDATE SET delta = excluded.delta, per_plan_cap = excluded.per_plan_cap,
                window_days = excluded.window_days, window_cap = excluded.window_cap, lifetime_cap = excluded.lifetime_cap
                """)
            return (b.name, .budgetSet(.init(b)))
        }
    }

    /// The data set's row is locked (PostgreSQL; SQLite has one writer), so concurrent reservations
    /// of one data set queue, and the caps are checked against every active entry before the insert.
    public func reserve(_ entry: LedgerEntry, now: Date, actor: String) async throws {
        let json = try entry.event.canonicalJSON()
        try await audited(actor: actor, at: now) { tx in
            guard let row = try await tx.rows("SELECT \(raw: Self.budgetColumns) FROM datasets WHERE name = \(entry.dataset)\(.forUpdate)").first else {
                throw LedgerError.unknownDataset(entry.dataset)
            }
            let active = try await Self.entries(tx, dataset: entry.dataset).filter { $0.state != .released }
            try BudgetCheck.check(try Self.budget(row), active: active, adding: entry, now: now)
            try await tx.execute("""
                INSERT INTO ledger_entries (id, dataset, plan_hash, round, event, state, created_at, settled_at)
                VALUES (\(entry.id), \(entry.dataset), \(entry.planHash), \(entry.round), \(json), 'reserved', \(entry.createdAt), NULL)
                """)
            return (entry.dataset, .budgetReserved(.init(id: entry.id, dataset: entry.dataset, plan: entry.planHash, round: entry.round, event: json)))
        }
    }

    public func settle(id: String, to state: LedgerState, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { tx in
            guard let row = try await tx.rows("SELECT state, dataset FROM ledger_entries WHERE id = \(id)\(.forUpdate)").first else {
                throw LedgerError.unknownReservation(id)
            }
            let current: String = try row.get("state")
            guard current == LedgerState.reserved.rawValue else {
                throw LedgerError.alreadySettled(id: id, state: LedgerState(rawValue: current) ?? .released)
            }
            guard state != .reserved else { throw LedgerError.notASettlement(id: id) }
            try await tx.execute("UPDATE ledger_entries SET state = \(state.rawValue), settled_at = \(at) WHERE id = \(id) AND state = 'reserved'")
            return (try row.get("dataset"), .budgetSettled(.init(id: id, state: state)))
        }
    }

    public func entries(dataset: String) async throws -> [LedgerEntry] {
        try await reading { tx in try await Self.entries(tx, dataset: dataset) }
    }

    public func ledgerTables() async throws -> (budgets: [DatasetBudget], entries: [LedgerEntry]) {
        let (budgets, entries) = try await reading { tx in
            (try await tx.rows("SELECT \(raw: Self.budgetColumns) FROM datasets ORDER BY name").map(Self.budget),
             try await Self.entries(tx, dataset: nil))
        }
        return (budgets, entries)
    }

    public func budget(_ dataset: String) async throws -> DatasetBudget? {
        try await reading { tx in
            try await tx.rows("SELECT \(raw: Self.budgetColumns) FROM datasets WHERE name = \(dataset)").first.map(Self.budget)
        }
    }

    public func addConsent(_ c: ConsentRecord, actor: String) async throws {
        try await audited(actor: actor, at: Date()) { tx in
            try await tx.execute("""
                INSERT INTO consents (id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at)
                VALUES (\(c.id), \(c.dataset), \(c.purpose), \(c.legalBasis), \(c.scope), \(c.validFrom), \(c.validUntil), NULL)
                """)
            return (c.dataset, .consentAdded(.init(c)))
        }
    }

    public func withdrawConsent(id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { tx in
            guard let row = try await tx.rows("SELECT dataset FROM consents WHERE id = \(id) AND withdrawn_at IS NULL\(.forUpdate)").first else {
                throw LedgerError.storage("no active consent '\(id)' to withdraw")
            }
            try await tx.execute("UPDATE consents SET withdrawn_at = \(at) WHERE id = \(id)")
            return (try row.get("dataset"), .consentWithdrawn(.init(id: id)))
        }
    }

    public func consents(dataset: String) async throws -> [ConsentRecord] {
        try await reading { tx in
            try await tx.rows("""
                SELECT id, dataset, purpose, legal_basis, scope, valid_from, valid_until, withdrawn_at FROM consents WHERE dataset = \(dataset) ORDER BY valid_from, id
                """).map { r in
                ConsentRecord(id: try r.get("id"), dataset: try r.get("dataset"), purpose: try r.get("purpose"), legalBasis: try r.get("legal_basis"),
                              scope: try r.get("scope"), validFrom: Date(timeIntervalSince1970: try r.get("valid_from")),
                              validUntil: try r.optional("valid_until", as: Double.self).map(Date.init(timeIntervalSince1970:)),
                              withdrawnAt: try r.optional("withdrawn_at", as: Double.self).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    // MARK: The audit chain

    public func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { _ in (subject, event) }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await reading { tx in
            try await tx.rows("SELECT seq, at, actor, action, subject, payload, previous_hash, hash FROM audit_records ORDER BY seq").map { r in
                AuditRecord(seq: try r.get("seq"), at: Date(timeIntervalSince1970: try r.get("at")), actor: try r.get("actor"), action: try r.get("action"),
                            subject: try r.get("subject"), payload: try r.get("payload"), previousHash: try r.get("previous_hash"), hash: try r.get("hash"))
            }
        }
    }

    public func auditTail() async throws -> (seq: Int, hash: String)? {
        try await reading { tx in
            try await tx.rows("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").first.map { r in
                (seq: try r.get("seq", as: Int.self), hash: try r.get("hash", as: String.self))
            }
        }
    }

    public func record(_ h: AuditHead) async throws {
        _ = try await transaction { tx in
            try await tx.execute("""
                INSERT INTO audit_heads (signer, seq, hash, at, certificate, signature)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at), \(h.certificate), \(h.signature)) ON CONFLICT (signer, seq) DO NOTHING
                """)
        }
    }

    public func auditHeads() async throws -> [AuditHead] {
        try await reading { tx in
            try await tx.rows("SELECT signer, seq, hash, at, certificate, signature FROM audit_heads ORDER BY at, signer, seq").map(Self.head)
        }
    }

    public func witness(_ h: AuditHead, receivedAt: Date) async throws {
        _ = try await transaction { tx in
            try await tx.execute("""
                INSERT INTO audit_witnessed (signer, seq, hash, at, certificate, signature, received_at)
                VALUES (\(h.signer), \(h.seq), \(h.hash), \(h.at), \(h.certificate), \(h.signature), \(receivedAt)) ON CONFLICT (signer, seq) DO NOTHING
                """)
        }
    }

    public func witnessedHeads(signer: String?) async throws -> [AuditHead] {
        try await reading { tx in
            let statement: SQLStatement = signer.map {
                "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed WHERE signer = \($0) ORDER BY at, seq"
            } ?? "SELECT signer, seq, hash, at, certificate, signature FROM audit_witnessed ORDER BY at, signer, seq"
            return try await tx.rows(statement).map(Self.head)
        }
    }

    // MARK: Rows

    static var budgetColumns: StaticString { "name, delta, per_plan_cap, window_days, window_cap, lifetime_cap" }

    /// A `datasets` row.
    static func budget(_ r: SQLRow) throws -> DatasetBudget {
        DatasetBudget(name: try r.get("name"), delta: try r.get("delta"), perPlanCap: try r.get("per_plan_cap"), windowDays: try r.optional("window_days"),
                      windowCap: try r.optional("window_cap"), lifetimeCap: try r.optional("lifetime_cap"))
    }

    /// An `audit_heads` or `audit_witnessed` row.
    static func head(_ r: SQLRow) throws -> AuditHead {
        AuditHead(signer: try r.get("signer"), seq: try r.get("seq"), hash: try r.get("hash"), at: Date(timeIntervalSince1970: try r.get("at")),
                  certificate: try r.get("certificate"), signature: try r.get("signature"))
    }

    /// One data set's entries, or every entry (`dataset` nil).
    static func entries(_ tx: any SQLTransaction, dataset: String?) async throws -> [LedgerEntry] {
        let columns: StaticString = "id, dataset, plan_hash, round, event, state, created_at, settled_at"
        let statement: SQLStatement = dataset.map { "SELECT \(raw: columns) FROM ledger_entries WHERE dataset = \($0) ORDER BY created_at, id" }
            ?? "SELECT \(raw: columns) FROM ledger_entries ORDER BY created_at, id"
        return try await tx.rows(statement).map { r in
            LedgerEntry(id: try r.get("id"), dataset: try r.get("dataset"), planHash: try r.get("plan_hash"), round: try r.get("round"),
                        event: try DPEvent.fromJSON(try r.get("event")), state: try LedgerState(stored: try r.get("state")),
                        createdAt: Date(timeIntervalSince1970: try r.get("created_at")),
                        settledAt: try r.optional("settled_at", as: Double.self).map(Date.init(timeIntervalSince1970:)))
        }
    }
}
