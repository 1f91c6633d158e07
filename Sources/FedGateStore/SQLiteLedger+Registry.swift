import FedGatePrivacy
import Foundation
import GRDB

// Governance (decisions, approvals), parties and enrolment, rounds and the model registry.
extension SQLiteLedger {
    public func record(_ d: RecordedDecision, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { db in
            let t = at.timeIntervalSince1970
            try db.execute(sql: "INSERT INTO policy_versions (hash, silo, content, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT(hash) DO NOTHING",
                           arguments: [d.policyHash, d.silo, d.policyContent, t])
            try db.execute(sql: "INSERT INTO plans (hash, content, recorded_at) VALUES (?, ?, ?) ON CONFLICT(hash) DO NOTHING",
                           arguments: [d.planHash, d.planContent, t])
            if d.outcome == "needs_approval", let hours = d.approvalValidHours {
                try db.execute(sql: """
                    INSERT INTO approvals (plan_hash, silo, policy_hash, state, requested_at, valid_hours) VALUES (?, ?, ?, 'pending', ?, ?)
                    ON CONFLICT(plan_hash, silo) DO NOTHING
                    """, arguments: [d.planHash, d.silo, d.policyHash, t, hours])
            }
            return (d.planHash, .policyDecision(d.auditEvent))
        }
    }

    public func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { db in
            guard let state = try String.fetchOne(db, sql: "SELECT state FROM approvals WHERE plan_hash = ? AND silo = ?", arguments: [planHash, silo]) else {
                throw LedgerError.storage("no approval request for plan \(planHash) at silo '\(silo)'")
            }
            guard state == "pending" else { throw LedgerError.storage("plan \(planHash) was already \(state) at silo '\(silo)'") }
            try db.execute(sql: "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? WHERE plan_hash = ? AND silo = ?",
                           arguments: [approve ? "approved" : "rejected", actor, at.timeIntervalSince1970, planHash, silo])
            return (planHash, .planApproval(approved: approve, .init(plan: planHash, silo: silo)))
        }
    }

    public func approval(planHash: String, silo: String) async throws -> Approval? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM approvals WHERE plan_hash = ? AND silo = ?", arguments: [planHash, silo]).map { r in
                    let decided: Double? = try r.field("decided_at")
                    return Approval(planHash: try r.field("plan_hash"), silo: try r.field("silo"), policyHash: try r.field("policy_hash"),
                                    state: Approval.State(rawValue: try r.field("state")) ?? .rejected, requestedAt: Date(timeIntervalSince1970: try r.field("requested_at")),
                                    validHours: try r.field("valid_hours"), decidedBy: try r.field("decided_by"), decidedAt: decided.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }

    public func enroll(_ p: Party, actor: String) async throws {
        try await audited(actor: actor, at: p.enrolledAt) { db in
            try Self.upsert(db, p)
            return (p.id, .partyEnrolled(.init(p)))
        }
    }

    /// Enrols or re-enrols a party (a re-enrolled party is no longer revoked).
    static func upsert(_ db: Database, _ p: Party) throws {
        try db.execute(sql: """
            INSERT INTO parties (id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)
            ON CONFLICT(id) DO UPDATE SET region = excluded.region, jurisdiction = excluded.jurisdiction,
            certificate_sha256 = excluded.certificate_sha256, enrolled_at = excluded.enrolled_at, revoked_at = NULL
            """, arguments: [p.id, p.kind.rawValue, p.region, p.jurisdiction, p.certificateSHA256, p.enrolledAt.timeIntervalSince1970])
    }

    public func revoke(party id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { db in
            guard try String.fetchOne(db, sql: "SELECT id FROM parties WHERE id = ? AND revoked_at IS NULL", arguments: [id]) != nil else {
                throw LedgerError.storage("no enrolled party '\(id)' to revoke")
            }
            try db.execute(sql: "UPDATE parties SET revoked_at = ? WHERE id = ?", arguments: [at.timeIntervalSince1970, id])
            return (id, .partyRevoked)
        }
    }

    public func invite(_ i: EnrolmentInvitation, actor: String) async throws {
        try await audited(actor: actor, at: i.createdAt) { db in
            try db.execute(sql: """
                INSERT INTO enrolment_invitations (token_sha256, silo, region, jurisdiction, created_at, expires_at, used_at)
                VALUES (?, ?, ?, ?, ?, ?, NULL)
                """, arguments: [i.tokenSHA256, i.silo, i.region, i.jurisdiction, i.createdAt.timeIntervalSince1970, i.expiresAt.timeIntervalSince1970])
            return (i.silo, .enrolmentInvited(.init(region: i.region, jurisdiction: i.jurisdiction, expiresAt: i.expiresAt.timeIntervalSince1970)))
        }
    }

    public func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation? {
        try await wrap { try await pool.read { db in try Self.invitation(db, tokenSHA256) } }
    }

    static func invitation(_ db: Database, _ hash: String) throws -> EnrolmentInvitation? {
        try Row.fetchOne(db, sql: "SELECT * FROM enrolment_invitations WHERE token_sha256 = ?", arguments: [hash]).map { r in
            let used: Double? = try r.field("used_at")
            return EnrolmentInvitation(silo: try r.field("silo"), region: try r.field("region"), jurisdiction: try r.field("jurisdiction"), tokenSHA256: try r.field("token_sha256"),
                                       createdAt: Date(timeIntervalSince1970: try r.field("created_at")), expiresAt: Date(timeIntervalSince1970: try r.field("expires_at")),
                                       usedAt: used.map(Date.init(timeIntervalSince1970:)))
        }
    }

    public func redeem(tokenSHA256: String, enrolling p: Party, at: Date) async throws {
        try await audited(actor: p.id, at: at) { db in
            guard let invitation = try Self.invitation(db, tokenSHA256) else { throw LedgerError.storage("unknown enrolment token") }
            if let refusal = invitation.refusal(for: p.id, region: p.region, at: at) { throw LedgerError.storage(refusal) }
            try db.execute(sql: "UPDATE enrolment_invitations SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL",
                           arguments: [at.timeIntervalSince1970, tokenSHA256])
            let enrolled = invitation.party(p, at: at)
            try Self.upsert(db, enrolled)
            return (p.id, .enrolmentRedeemed(.init(enrolled)))
        }
    }

    public func revoke(_ r: Revocation, actor: String) async throws {
        try await audited(actor: actor, at: r.revokedAt) { db in
            try db.execute(sql: "INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING",
                           arguments: [r.kind.rawValue, r.value, r.reason, r.revokedAt.timeIntervalSince1970])
            if r.kind == .identity {
                try db.execute(sql: "UPDATE parties SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [r.revokedAt.timeIntervalSince1970, r.value])
            }
            return (r.value, .revoked(.init(kind: r.kind.rawValue, value: r.value, reason: r.reason)))
        }
    }

    public func revocations() async throws -> RevocationList {
        try await wrap {
            try await pool.read { db in
                var list = RevocationList(identities: Set(try String.fetchAll(db, sql: "SELECT id FROM parties WHERE revoked_at IS NOT NULL")))
                for row in try Row.fetchAll(db, sql: "SELECT kind, value FROM revocations") {
                    guard let kind = Revocation.Kind(rawValue: try row.field("kind")) else { continue }
                    list.add(kind, try row.field("value"))
                }
                return list
            }
        }
    }

    public func party(_ id: String) async throws -> Party? {
        try await wrap {
            try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM parties WHERE id = ?", arguments: [id]).map { r in
                    let revoked: Double? = try r.field("revoked_at")
                    return Party(id: try r.field("id"), kind: Party.Kind(rawValue: try r.field("kind")) ?? .silo, region: try r.field("region"), jurisdiction: try r.field("jurisdiction"),
                                 certificateSHA256: try r.field("certificate_sha256"), enrolledAt: Date(timeIntervalSince1970: try r.field("enrolled_at")),
                                 revokedAt: revoked.map(Date.init(timeIntervalSince1970:)))
                }
            }
        }
    }
}
