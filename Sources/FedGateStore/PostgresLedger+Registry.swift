import FedGatePrivacy
import Foundation
import Logging
import PostgresNIO

// Governance (decisions, approvals), parties and enrolment, rounds and the model registry.
extension PostgresLedger {
    public func record(_ d: RecordedDecision, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { conn in
            let t = at.timeIntervalSince1970
            try await conn.query("INSERT INTO policy_versions (hash, silo, content, recorded_at) VALUES (\(d.policyHash), \(d.silo), \(d.policyContent), \(t)) ON CONFLICT (hash) DO NOTHING", logger: logger)
            try await conn.query("INSERT INTO plans (hash, content, recorded_at) VALUES (\(d.planHash), \(d.planContent), \(t)) ON CONFLICT (hash) DO NOTHING", logger: logger)
            if d.outcome == "needs_approval", let hours = d.approvalValidHours {
                try await conn.query("""
                    INSERT INTO approvals (plan_hash, silo, policy_hash, state, requested_at, valid_hours)
                    VALUES (\(d.planHash), \(d.silo), \(d.policyHash), 'pending', \(t), \(hours)) ON CONFLICT (plan_hash, silo) DO NOTHING
                    """, logger: logger)
            }
            return (d.planHash, .policyDecision(d.auditEvent))
        }
    }

    public func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { conn in
            var state: String?
            for try await s in try await conn.query("SELECT state FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo) FOR UPDATE", logger: logger).decode(String.self) {
                state = s
            }
            guard let state else { throw LedgerError.storage("no approval request for plan \(planHash) at silo '\(silo)'") }
            guard state == "pending" else { throw LedgerError.storage("plan \(planHash) was already \(state) at silo '\(silo)'") }
            let newState = approve ? "approved" : "rejected"
            try await conn.query("UPDATE approvals SET state = \(newState), decided_by = \(actor), decided_at = \(at.timeIntervalSince1970) WHERE plan_hash = \(planHash) AND silo = \(silo)", logger: logger)
            return (planHash, .planApproval(approved: approve, .init(plan: planHash, silo: silo)))
        }
    }

    public func approval(planHash: String, silo: String) async throws -> Approval? {
        try await wrap {
            var out: Approval?
            for try await (plan, s, policy, state, requested, hours, by, decided) in try await client.query(
                "SELECT plan_hash, silo, policy_hash, state, requested_at, valid_hours, decided_by, decided_at FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo)",
                logger: logger).decode((String, String, String, String, Double, Int, String?, Double?).self) {
                out = Approval(planHash: plan, silo: s, policyHash: policy, state: Approval.State(rawValue: state) ?? .rejected,
                               requestedAt: Date(timeIntervalSince1970: requested), validHours: hours, decidedBy: by,
                               decidedAt: decided.map(Date.init(timeIntervalSince1970:)))
            }
            return out
        }
    }

    public func enroll(_ p: Party, actor: String) async throws {
        try await audited(actor: actor, at: p.enrolledAt) { conn in
            try await Self.upsert(conn, p, logger: logger)
            return (p.id, .partyEnrolled(.init(p)))
        }
    }

    /// Enrols or re-enrols a party (a re-enrolled party is no longer revoked).
    static func upsert(_ conn: PostgresConnection, _ p: Party, logger: Logger) async throws {
        try await conn.query("""
            INSERT INTO parties (id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at)
            VALUES (\(p.id), \(p.kind.rawValue), \(p.region), \(p.jurisdiction), \(p.certificateSHA256), \(p.enrolledAt.timeIntervalSince1970), NULL)
            ON CONFLICT (id) DO UPDATE SET region = excluded.region, jurisdiction = excluded.jurisdiction,
            certificate_sha256 = excluded.certificate_sha256, enrolled_at = excluded.enrolled_at, revoked_at = NULL
            """, logger: logger)
    }

    public func revoke(party id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var found = false
            for try await _ in try await conn.query("SELECT id FROM parties WHERE id = \(id) AND revoked_at IS NULL FOR UPDATE", logger: logger).decode(String.self) {
                found = true
            }
            guard found else { throw LedgerError.storage("no enrolled party '\(id)' to revoke") }
            try await conn.query("UPDATE parties SET revoked_at = \(at.timeIntervalSince1970) WHERE id = \(id)", logger: logger)
            return (id, .partyRevoked)
        }
    }

    public func revoke(_ r: Revocation, actor: String) async throws {
        try await audited(actor: actor, at: r.revokedAt) { conn in
            try await conn.query("""
                INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (\(r.kind.rawValue), \(r.value), \(r.reason), \(r.revokedAt.timeIntervalSince1970))
                ON CONFLICT (kind, value) DO NOTHING
                """, logger: logger)
            if r.kind == .identity {
                try await conn.query("UPDATE parties SET revoked_at = \(r.revokedAt.timeIntervalSince1970) WHERE id = \(r.value) AND revoked_at IS NULL", logger: logger)
            }
            return (r.value, .revoked(.init(kind: r.kind.rawValue, value: r.value, reason: r.reason)))
        }
    }

    public func revocations() async throws -> RevocationList {
        try await wrap {
            var list = RevocationList()
            for try await id in try await client.query("SELECT id FROM parties WHERE revoked_at IS NOT NULL", logger: logger).decode(String.self) {
                list.identities.insert(id)
            }
            for try await (kind, value) in try await client.query("SELECT kind, value FROM revocations", logger: logger).decode((String, String).self) {
                if let k = Revocation.Kind(rawValue: kind) { list.add(k, value) }
            }
            return list
        }
    }

    public func party(_ id: String) async throws -> Party? {
        try await wrap {
            var out: Party?
            for try await (pid, kind, region, jurisdiction, cert, enrolled, revoked) in try await client.query(
                "SELECT id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at FROM parties WHERE id = \(id)", logger: logger)
                .decode((String, String, String, String, String, Double, Double?).self) {
                out = Party(id: pid, kind: Party.Kind(rawValue: kind) ?? .silo, region: region, jurisdiction: jurisdiction, certificateSHA256: cert,
                            enrolledAt: Date(timeIntervalSince1970: enrolled), revokedAt: revoked.map(Date.init(timeIntervalSince1970:)))
            }
            return out
        }
    }

    public func invite(_ i: EnrolmentInvitation, actor: String) async throws {
        try await audited(actor: actor, at: i.createdAt) { conn in
            try await conn.query("""
                INSERT INTO enrolment_invitations (token_sha256, silo, region, jurisdiction, created_at, expires_at, used_at)
                VALUES (\(i.tokenSHA256), \(i.silo), \(i.region), \(i.jurisdiction), \(i.createdAt.timeIntervalSince1970), \(i.expiresAt.timeIntervalSince1970), NULL)
                """, logger: logger)
            return (i.silo, .enrolmentInvited(.init(region: i.region, jurisdiction: i.jurisdiction, expiresAt: i.expiresAt.timeIntervalSince1970)))
        }
    }

    public func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation? {
        try await wrap { try await client.withConnection { conn in try await Self.invitation(conn, tokenSHA256, lock: false, logger: logger) } }
    }

    static func invitation(_ conn: PostgresConnection, _ hash: String, lock: Bool, logger: Logger) async throws -> EnrolmentInvitation? {
        var out: EnrolmentInvitation?
        let query: PostgresQuery = lock
            ? "SELECT silo, region, jurisdiction, token_sha256, created_at, expires_at, used_at FROM enrolment_invitations WHERE token_sha256 = \(hash) FOR UPDATE"
            : "SELECT silo, region, jurisdiction, token_sha256, created_at, expires_at, used_at FROM enrolment_invitations WHERE token_sha256 = \(hash)"
        for try await (silo, region, jurisdiction, token, created, expires, used) in try await conn.query(query, logger: logger)
            .decode((String, String, String, String, Double, Double, Double?).self) {
            out = EnrolmentInvitation(silo: silo, region: region, jurisdiction: jurisdiction, tokenSHA256: token,
                                      createdAt: Date(timeIntervalSince1970: created), expiresAt: Date(timeIntervalSince1970: expires),
                                      usedAt: used.map(Date.init(timeIntervalSince1970:)))
        }
        return out
    }

    public func redeem(tokenSHA256: String, enrolling p: Party, at: Date) async throws {
        try await audited(actor: p.id, at: at) { conn in
            guard let invitation = try await Self.invitation(conn, tokenSHA256, lock: true, logger: logger) else {
                throw LedgerError.storage("unknown enrolment token")
            }
            if let refusal = invitation.refusal(for: p.id, region: p.region, at: at) { throw LedgerError.storage(refusal) }
            try await conn.query("UPDATE enrolment_invitations SET used_at = \(at.timeIntervalSince1970) WHERE token_sha256 = \(tokenSHA256)",
                                 logger: logger)
            let enrolled = invitation.party(p, at: at)
            try await Self.upsert(conn, enrolled, logger: logger)
            return (p.id, .enrolmentRedeemed(.init(enrolled)))
        }
    }
}
