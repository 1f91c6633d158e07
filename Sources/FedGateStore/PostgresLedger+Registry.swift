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

    public func openRound(_ r: RoundRecord, actor: String) async throws {
        try await audited(actor: actor, at: r.updatedAt) { conn in
            try await conn.query("""
                INSERT INTO rounds (plan_hash, number, state, sampled, survivors, deadline, updated_at)
                VALUES (\(r.planHash), \(r.number), 'planned', \(RegistryJSON.encode(r.sampled)), \(RegistryJSON.encode(r.survivors)),
                \(r.deadline.timeIntervalSince1970), \(r.updatedAt.timeIntervalSince1970))
                """, logger: logger)
            return (r.planHash, .roundPlanned(.init(round: r.number, sampled: r.sampled)))
        }
    }

    public func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { conn in
            var current: String?
            for try await s in try await conn.query("SELECT state FROM rounds WHERE plan_hash = \(planHash) AND number = \(number) FOR UPDATE", logger: logger).decode(String.self) {
                current = s
            }
            try RegistryJSON.transition(from: current, to: state, planHash: planHash, number: number)
            try await conn.query("""
                UPDATE rounds SET state = \(state.rawValue), survivors = \(RegistryJSON.encode(survivors)), updated_at = \(at.timeIntervalSince1970)
                WHERE plan_hash = \(planHash) AND number = \(number)
                """, logger: logger)
            return (planHash, .roundAdvanced(state, .init(round: number, survivors: survivors, checkpointSHA256: nil)))
        }
    }

    public func rounds(planHash: String) async throws -> [RoundRecord] {
        try await wrap {
            var out: [RoundRecord] = []
            for try await (plan, number, state, sampled, survivors, deadline, updated) in try await client.query(
                "SELECT plan_hash, number, state, sampled, survivors, deadline, updated_at FROM rounds WHERE plan_hash = \(planHash) ORDER BY number",
                logger: logger).decode((String, Int, String, String, String, Double, Double).self) {
                out.append(RoundRecord(planHash: plan, number: number, state: RoundRecord.State(rawValue: state) ?? .aborted,
                                       sampled: RegistryJSON.strings(sampled), survivors: RegistryJSON.strings(survivors),
                                       deadline: Date(timeIntervalSince1970: deadline), updatedAt: Date(timeIntervalSince1970: updated)))
            }
            return out
        }
    }

    public func addModelVersion(_ m: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int {
        if let content { try ModelContent.check(content, m.contentSHA256) }
        let sha = m.contentSHA256.lowercased()
        return try await wrap {
            try await client.withTransaction(logger: logger) { conn in
                // Serialise version numbering with the audit appends' lock.
                try await AdvisoryLock.modelVersions.take(conn, logger: logger)
                if let content {
                    try await conn.query("INSERT INTO model_content (content_sha256, bytes) VALUES (\(sha), \(ByteBuffer(bytes: content))) ON CONFLICT (content_sha256) DO NOTHING",
                                         logger: logger)
                } else {
                    var stored = 0
                    for try await n in try await conn.query("SELECT COUNT(*) FROM model_content WHERE content_sha256 = \(sha)", logger: logger).decode(Int.self) { stored = n }
                    guard stored > 0 else { throw LedgerError.storage("no model file with SHA-256 \(sha.prefix(12))… is stored; pass the file") }
                }
                var version = 1
                for try await v in try await conn.query("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions", logger: logger).decode(Int.self) { version = v }
                try await conn.query("""
                    INSERT INTO model_versions (version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at)
                    VALUES (\(version), \(m.planHash), \(m.round), \(sha), \(RegistryJSON.encode(m.participants)),
                    \(RegistryJSON.encode(m.epsilonPerSilo)), \(RegistryJSON.encode(m.metrics)), \(m.parent), \(m.createdAt.timeIntervalSince1970))
                    """, logger: logger)
                try await Self.append(conn, actor: actor, subject: m.planHash, event: .modelVersioned(.init(
                    version: version, round: m.round, contentSHA256: m.contentSHA256, epsilonPerSilo: m.epsilonPerSilo)),
                    at: m.createdAt, logger: logger)
                return version
            }
        }
    }

    public func modelVersions() async throws -> [ModelVersion] {
        try await wrap {
            var out: [ModelVersion] = []
            for try await (version, plan, round, content, participants, eps, metrics, parent, created) in try await client.query(
                "SELECT version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at FROM model_versions ORDER BY version",
                logger: logger).decode((Int, String, Int, String, String, String, String, Int?, Double).self) {
                out.append(ModelVersion(version: version, planHash: plan, round: round, contentSHA256: content,
                                        participants: RegistryJSON.strings(participants), epsilonPerSilo: RegistryJSON.numbers(eps),
                                        metrics: RegistryJSON.numbers(metrics), parent: parent, createdAt: Date(timeIntervalSince1970: created)))
            }
            return out
        }
    }

    public func modelContent(sha256: String) async throws -> [UInt8]? {
        try await wrap {
            var out: [UInt8]?
            for try await bytes in try await client.query("SELECT bytes FROM model_content WHERE content_sha256 = \(sha256.lowercased())",
                                                          logger: logger).decode(ByteBuffer.self) {
                out = Array(bytes.readableBytesView)
            }
            return out
        }
    }
}
