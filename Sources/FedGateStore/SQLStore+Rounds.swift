import Foundation

/// Rounds and the model registry, once for both backends.
extension SQLStore {
    public func openRound(_ r: RoundRecord, actor: String) async throws {
        try await audited(actor: actor, at: r.updatedAt) { tx in
            guard try await tx.rows("SELECT state FROM plan_rounds WHERE plan_hash = \(r.planHash) AND run = \(Self.run(of: r.planHash)) AND number = \(r.number)").isEmpty else {
                throw LedgerError.storage("round \(r.number) of plan \(r.planHash.prefix(12))… is already recorded in this run of it")
            }
            try await tx.execute("""
                INSERT INTO plan_rounds (plan_hash, run, number, state, sampled, survivors, deadline, updated_at)
                VALUES (\(r.planHash), \(Self.run(of: r.planHash)), \(r.number), 'planned', \(RegistryJSON.encode(r.sampled)), \(RegistryJSON.encode(r.survivors)), \(r.deadline), \(r.updatedAt))
                """)
            return (r.planHash, .roundPlanned(.init(round: r.number, sampled: r.sampled)))
        }
    }

    public func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { tx in
            let current = try await tx.rows("""
                SELECT state FROM plan_rounds WHERE plan_hash = \(planHash) AND run = \(Self.run(of: planHash)) AND number = \(number)\(.forUpdate)
                """).first
            try RegistryJSON.transition(from: try current?.get("state"), to: state, planHash: planHash, number: number)
            try await tx.execute("""
                UPDATE plan_rounds SET state = \(state.rawValue), survivors = \(RegistryJSON.encode(survivors)), updated_at = \(at)
                WHERE plan_hash = \(planHash) AND run = \(Self.run(of: planHash)) AND number = \(number)
                """)
            return (planHash, .roundAdvanced(state, .init(round: number, survivors: survivors, checkpointSHA256: nil)))
        }
    }

    /// The rounds of the plan's current (or last) run.
    public func rounds(planHash: String) async throws -> [RoundRecord] {
        try await reading { tx in
            try await tx.rows("""
                SELECT plan_hash, number, state, sampled, survivors, deadline, updated_at FROM plan_rounds
                WHERE plan_hash = \(planHash) AND run = \(Self.run(of: planHash)) ORDER BY number
                """).map { r in
                RoundRecord(planHash: try r.get("plan_hash"), number: try r.get("number"), state: RoundRecord.State(rawValue: try r.get("state")) ?? .aborted,
                            sampled: RegistryJSON.strings(try r.get("sampled")), survivors: RegistryJSON.strings(try r.get("survivors")),
                            deadline: Date(timeIntervalSince1970: try r.get("deadline")), updatedAt: Date(timeIntervalSince1970: try r.get("updated_at")))
            }
        }
    }

    /// The plan's current (or last) run, inside the statement that needs it (no query of its own):
    /// 1 when no run of the plan is recorded (rounds opened on their own).
    static func run(of planHash: String) -> SQLStatement {
        "COALESCE((SELECT run FROM plan_runs WHERE plan_hash = \(planHash)), 1)"
    }

    public func addModelVersion(_ m: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int {
        if let content { try ModelContent.check(content, m.contentSHA256) }
        let sha = m.contentSHA256.lowercased()
        return try await transaction { tx in
            // Version numbers are handed out one writer at a time.
            try await tx.lock(.modelVersions)
            if let content {
                try await tx.execute("INSERT INTO model_content (content_sha256, bytes) VALUES (\(sha), \(content)) ON CONFLICT (content_sha256) DO NOTHING")
            } else if try await tx.rows("SELECT 1 AS stored FROM model_content WHERE content_sha256 = \(sha)").isEmpty {
                throw LedgerError.storage("no model file with SHA-256 \(sha.prefix(12))… is stored; pass the file")
            }
            let version = try await tx.rows("SELECT COALESCE(MAX(version), 0) + 1 AS next FROM model_versions").first?.get("next", as: Int.self) ?? 1
            try await tx.execute("""
                INSERT INTO model_versions (version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at)
                VALUES (\(version), \(m.planHash), \(m.round), \(sha), \(RegistryJSON.encode(m.participants)),
                \(RegistryJSON.encode(m.epsilonPerSilo)), \(RegistryJSON.encode(m.metrics)), \(m.parent), \(m.createdAt))
                """)
            try await Self.append(tx, actor: actor, subject: m.planHash, event: .modelVersioned(.init(
                version: version, round: m.round, contentSHA256: m.contentSHA256, epsilonPerSilo: m.epsilonPerSilo)), at: m.createdAt)
            return version
        }
    }

    public func modelVersions() async throws -> [ModelVersion] {
        try await reading { tx in
            try await tx.rows("""
                SELECT version, plan_hash, round, content_sha256, participants, epsilon_per_silo, metrics, parent, created_at FROM model_versions ORDER BY version
                """).map { r in
                ModelVersion(version: try r.get("version"), planHash: try r.get("plan_hash"), round: try r.get("round"), contentSHA256: try r.get("content_sha256"),
                             participants: RegistryJSON.strings(try r.get("participants")), epsilonPerSilo: RegistryJSON.numbers(try r.get("epsilon_per_silo")),
                             metrics: RegistryJSON.numbers(try r.get("metrics")), parent: try r.optional("parent"),
                             createdAt: Date(timeIntervalSince1970: try r.get("created_at")))
            }
        }
    }

    public func modelContent(sha256: String) async throws -> [UInt8]? {
        try await reading { tx in
            try await tx.rows("SELECT bytes FROM model_content WHERE content_sha256 = \(sha256.lowercased())").first?.get("bytes", as: [UInt8].self)
        }
    }
}
