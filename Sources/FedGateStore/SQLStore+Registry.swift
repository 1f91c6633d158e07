import Foundation

/// Governance (decisions, approvals), parties, enrolment and revocations, once for both backends.
extension SQLStore {
    public func record(_ d: RecordedDecision, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { tx in
            try await tx.execute("INSERT INTO policy_versions (hash, silo, content, recorded_at) VALUES (\(d.policyHash), \(d.silo), \(d.policyContent), \(at)) ON CONFLICT (hash) DO NOTHING")
            try await tx.execute("INSERT INTO plans (hash, content, recorded_at) VALUES (\(d.planHash), \(d.planContent), \(at)) ON CONFLICT (hash) DO NOTHING")
            if d.outcome == "needs_approval", let hours = d.approvalValidHours {
                try await tx.execute("""
                    INSERT INTO approvals (plan_hash, silo, policy_hash, state, requested_at, valid_hours)
                    VALUES (\(d.planHash), \(d.silo), \(d.policyHash), 'pending', \(at), \(hours)) ON CONFLICT (plan_hash, silo) DO NOTHING
                    """)
            }
            return (d.planHash, .policyDecision(d.auditEvent))
        }
    }

    public func decideApproval(planHash: String, silo: String, approve: Bool, actor: String, at: Date) async throws {
        try await audited(actor: actor, at: at) { tx in
            guard let row = try await tx.rows("SELECT state FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo)\(.forUpdate)").first else {
                throw LedgerError.storage("no approval request for plan \(planHash) at silo '\(silo)'")
            }
            let state: String = try row.get("state")
            guard state == "pending" else { throw LedgerError.storage("plan \(planHash) was already \(state) at silo '\(silo)'") }
            try await tx.execute("""
                UPDATE approvals SET state = \(approve ? "approved" : "rejected"), decided_by = \(actor), decided_at = \(at) WHERE plan_hash = \(planHash) AND silo = \(silo)
                """)
            return (planHash, .planApproval(approved: approve, .init(plan: planHash, silo: silo)))
        }
    }

    public func approval(planHash: String, silo: String) async throws -> Approval? {
        try await reading { tx in
            try await tx.rows("""
                SELECT plan_hash, silo, policy_hash, state, requested_at, valid_hours, decided_by, decided_at FROM approvals WHERE plan_hash = \(planHash) AND silo = \(silo)
                """).first.map { r in
                Approval(planHash: try r.get("plan_hash"), silo: try r.get("silo"), policyHash: try r.get("policy_hash"),
                         state: Approval.State(rawValue: try r.get("state")) ?? .rejected, requestedAt: Date(timeIntervalSince1970: try r.get("requested_at")),
                         validHours: try r.get("valid_hours"), decidedBy: try r.optional("decided_by"),
                         decidedAt: try r.optional("decided_at", as: Double.self).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func enroll(_ p: Party, actor: String) async throws {
        try await audited(actor: actor, at: p.enrolledAt) { tx in
            try await Self.upsert(tx, p)
            return (p.id, .partyEnrolled(.init(p)))
        }
    }

    /// Enrols or re-enrols a party (a re-enrolled party is no longer revoked).
    static func upsert(_ tx: any SQLTransaction, _ p: Party) async throws {
        try await tx.execute("""
            INSERT INTO parties (id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at)
            VALUES (\(p.id), \(p.kind.rawValue), \(p.region), \(p.jurisdiction), \(p.certificateSHA256), \(p.enrolledAt), NULL)
            ON CONFLICT (id) DO UPDATE SET region = excluded.region, jurisdiction = excluded.jurisdiction,
            certificate_sha256 = excluded.certificate_sha256, enrolled_at = excluded.enrolled_at, revoked_at = NULL
            """)
    }

    public func revoke(party id: String, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { tx in
            guard try await !tx.rows("SELECT id FROM parties WHERE id = \(id) AND revoked_at IS NULL\(.forUpdate)").isEmpty else {
                throw LedgerError.storage("no enrolled party '\(id)' to revoke")
            }
            try await tx.execute("UPDATE parties SET revoked_at = \(at) WHERE id = \(id)")
            return (id, .partyRevoked)
        }
    }

    public func revoke(_ r: Revocation, actor: String) async throws {
        try await audited(actor: actor, at: r.revokedAt) { tx in
            try await tx.execute("""
                INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (\(r.kind.rawValue), \(r.value), \(r.reason), \(r.revokedAt))
                ON CONFLICT (kind, value) DO NOTHING
                """)
            if r.kind == .identity {
                try await tx.execute("UPDATE parties SET revoked_at = \(r.revokedAt) WHERE id = \(r.value) AND revoked_at IS NULL")
            }
            return (r.value, .revoked(.init(kind: r.kind.rawValue, value: r.value, reason: r.reason)))
        }
    }

    public func revocations() async throws -> RevocationList {
        try await reading { tx in
            var list = RevocationList(identities: Set(try await tx.rows("SELECT id FROM parties WHERE revoked_at IS NOT NULL").map { try $0.get("id") }))
            for row in try await tx.rows("SELECT kind, value FROM revocations") {
                if let kind = Revocation.Kind(rawValue: try row.get("kind")) { list.add(kind, try row.get("value")) }
            }
            return list
        }
    }

    public func party(_ id: String) async throws -> Party? {
        try await reading { tx in
            try await tx.rows("SELECT id, kind, region, jurisdiction, certificate_sha256, enrolled_at, revoked_at FROM parties WHERE id = \(id)").first.map { r in
                Party(id: try r.get("id"), kind: Party.Kind(rawValue: try r.get("kind")) ?? .silo, region: try r.get("region"), jurisdiction: try r.get("jurisdiction"),
                      certificateSHA256: try r.get("certificate_sha256"), enrolledAt: Date(timeIntervalSince1970: try r.get("enrolled_at")),
                      revokedAt: try r.optional("revoked_at", as: Double.self).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func invite(_ i: EnrolmentInvitation, actor: String) async throws {
        try await audited(actor: actor, at: i.createdAt) { tx in
            try await tx.execute("""
                INSERT INTO enrolment_invitations (token_sha256, silo, region, jurisdiction, created_at, expires_at, used_at)
                VALUES (\(i.tokenSHA256), \(i.silo), \(i.region), \(i.jurisdiction), \(i.createdAt), \(i.expiresAt), NULL)
                """)
            return (i.silo, .enrolmentInvited(.init(region: i.region, jurisdiction: i.jurisdiction, expiresAt: i.expiresAt.timeIntervalSince1970)))
        }
    }

    public func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation? {
        try await reading { tx in try await Self.invitation(tx, tokenSHA256, lock: false) }
    }

    static func invitation(_ tx: any SQLTransaction, _ hash: String, lock: Bool) async throws -> EnrolmentInvitation? {
        let columns: StaticString = "silo, region, jurisdiction, token_sha256, created_at, expires_at, used_at"
        let statement: SQLStatement = lock
            ? "SELECT \(raw: columns) FROM enrolment_invitations WHERE token_sha256 = \(hash)\(.forUpdate)"
            : "SELECT \(raw: columns) FROM enrolment_invitations WHERE token_sha256 = \(hash)"
        return try await tx.rows(statement).first.map { r in
            EnrolmentInvitation(silo: try r.get("silo"), region: try r.get("region"), jurisdiction: try r.get("jurisdiction"), tokenSHA256: try r.get("token_sha256"),
                                createdAt: Date(timeIntervalSince1970: try r.get("created_at")), expiresAt: Date(timeIntervalSince1970: try r.get("expires_at")),
                                usedAt: try r.optional("used_at", as: Double.self).map(Date.init(timeIntervalSince1970:)))
        }
    }

    /// A token is redeemed once: its row is locked, checked (silo, region, expiry, unused) and marked used.
    public func redeem(tokenSHA256: String, enrolling p: Party, at: Date) async throws {
        try await audited(actor: p.id, at: at) { tx in
            guard let invitation = try await Self.invitation(tx, tokenSHA256, lock: true) else { throw LedgerError.storage("unknown enrolment token") }
            if let refusal = invitation.refusal(for: p.id, region: p.region, at: at) { throw LedgerError.storage(refusal) }
            try await tx.execute("UPDATE enrolment_invitations SET used_at = \(at) WHERE token_sha256 = \(tokenSHA256) AND used_at IS NULL")
            let enrolled = invitation.party(p, at: at)
            try await Self.upsert(tx, enrolled)
            return (p.id, .enrolmentRedeemed(.init(enrolled)))
        }
    }
}
