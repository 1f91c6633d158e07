import Foundation

/// Plan runs, their round checkpoints and the broker lease, once for both backends.
extension SQLStore {
    public func startPlanRun(_ run: PlanRun, submission: AuditEvent.PlanSubmission, actor: String) async throws {
        try await audited(actor: actor, at: run.submittedAt) { tx in
            let earlier = try await tx.rows("SELECT state, run FROM plan_runs WHERE plan_hash = \(run.planHash)\(.forUpdate)").first
            if try earlier?.get("state", as: String.self) == "running" { throw LedgerError.storage("plan \(run.planHash.prefix(12))… is already running") }
            // A plan that ran before runs again as its next run: its earlier runs' rounds stay as they were.
            let number = try (earlier?.get("run", as: Int.self) ?? 0) + 1
            try await tx.execute("""
                INSERT INTO plan_runs (plan_hash, run, plan_yaml, submitter, state, reason, checkpoint_round, checkpoint_sha256, standardisation, submitted_at, updated_at)
                VALUES (\(run.planHash), \(number), \(run.planYAML), \(run.submitter), 'running', NULL, NULL, NULL, NULL, \(run.submittedAt), \(run.submittedAt))
                ON CONFLICT (plan_hash) DO UPDATE SET run = excluded.run, plan_yaml = excluded.plan_yaml, submitter = excluded.submitter, state = 'running',
                reason = NULL, checkpoint_round = NULL, checkpoint_sha256 = NULL, standardisation = NULL,
                submitted_at = excluded.submitted_at, updated_at = excluded.updated_at
                """)
            return (run.planHash, .planSubmitted(submission))
        }
    }

    public func commitRound(planHash: String, number: Int, survivors: [String], checkpoint: PlanRun.Checkpoint, content: [UInt8],
                            fence: LeaseFence?, at: Date, actor: String) async throws {
        try ModelContent.check(content, checkpoint.contentSHA256)
        let sha = checkpoint.contentSHA256.lowercased()
        try await audited(actor: actor, at: at) { tx in
            if let fence { try fence.check(try await Self.lease(tx, fence.name)) }
            let current = try await tx.rows("""
                SELECT state FROM plan_rounds WHERE plan_hash = \(planHash) AND run = \(Self.run(of: planHash)) AND number = \(number)\(.forUpdate)
                """).first
            try RegistryJSON.transition(from: try current?.get("state"), to: .committed, planHash: planHash, number: number)
            try await tx.execute("""
                UPDATE plan_rounds SET state = 'committed', survivors = \(RegistryJSON.encode(survivors)), updated_at = \(at)
                WHERE plan_hash = \(planHash) AND run = \(Self.run(of: planHash)) AND number = \(number)
                """)
            let stored = try await tx.rows("SELECT checkpoint_sha256 FROM plan_runs WHERE plan_hash = \(planHash)\(.forUpdate)").first
            let previous = try stored?.optional("checkpoint_sha256", as: String.self)
            try await tx.execute("INSERT INTO model_content (content_sha256, bytes) VALUES (\(sha), \(content)) ON CONFLICT (content_sha256) DO NOTHING")
            let updated = try await tx.execute("""
                UPDATE plan_runs SET checkpoint_round = \(checkpoint.round), checkpoint_sha256 = \(sha), standardisation = \(checkpoint.standardisation),
                updated_at = \(at) WHERE plan_hash = \(planHash) AND state = 'running' RETURNING 1
                """)
            guard updated == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here; round \(number) not committed") }
            // The checkpoint it replaces goes, unless a version or another plan still points to it.
            if let previous, previous != sha {
                try await tx.execute("""
                    DELETE FROM model_content WHERE content_sha256 = \(previous)
                    AND NOT EXISTS (SELECT 1 FROM model_versions WHERE content_sha256 = \(previous))
                    AND NOT EXISTS (SELECT 1 FROM plan_runs WHERE checkpoint_sha256 = \(previous))
                    """)
            }
            return (planHash, .roundAdvanced(.committed, .init(round: number, survivors: survivors, checkpointSHA256: sha)))
        }
    }

    public func finishPlanRun(planHash: String, state: PlanRun.State, reason: String?, fence: LeaseFence?, at: Date, actor: String) async throws {
        try await audited(actor: actor, at: at) { tx in
            if let fence { try fence.check(try await Self.lease(tx, fence.name)) }
            let updated = try await tx.execute("""
                UPDATE plan_runs SET state = \(state.rawValue), reason = \(reason), updated_at = \(at)
                WHERE plan_hash = \(planHash) AND state = 'running' RETURNING 1
                """)
            guard updated == 1 else { throw LedgerError.storage("plan \(planHash.prefix(12))… is not running here") }
            return (planHash, .planEnded(state, .init(reason: reason)))
        }
    }

    public func planRuns() async throws -> [PlanRun] {
        try await reading { tx in
            try await tx.rows("""
                SELECT plan_hash, run, plan_yaml, submitter, state, reason, checkpoint_round, checkpoint_sha256, standardisation, submitted_at, updated_at
                FROM plan_runs ORDER BY submitted_at, plan_hash
                """).map { r in
                let round = try r.optional("checkpoint_round", as: Int.self), sha = try r.optional("checkpoint_sha256", as: String.self)
                let standardisation = try r.optional("standardisation", as: String.self)
                let checkpoint = round.flatMap { n in sha.flatMap { s in standardisation.map { PlanRun.Checkpoint(round: n, contentSHA256: s, standardisation: $0) } } }
                var run = PlanRun(planHash: try r.get("plan_hash"), planYAML: try r.get("plan_yaml"), submitter: try r.get("submitter"),
                                  state: PlanRun.State(rawValue: try r.get("state")) ?? .failed, reason: try r.optional("reason"), checkpoint: checkpoint,
                                  submittedAt: Date(timeIntervalSince1970: try r.get("submitted_at")),
                                  updatedAt: Date(timeIntervalSince1970: try r.get("updated_at")))
                run.run = try r.get("run")
                return run
            }
        }
    }

    public func claimLease(_ name: String, holder: String, duration: TimeInterval, now: Date, renewing: Int?) async throws -> BrokerLease? {
        try await transaction { tx in
            // A claim gives up on a lock held for longer than a third of the lease (a renewal's
            // interval) rather than queue behind a frozen session for ever; it is tried again.
            try await tx.limitLockWaits(to: duration / 3)
            // Claims of any lease queue here, so two brokers never both see it free.
            try await tx.lock(.leases)
            let current = try await Self.lease(tx, name)
            guard let next = BrokerLease.claim(current: current, holder: holder, now: now, duration: duration, renewing: renewing) else { return nil }
            try await tx.execute("""
                INSERT INTO broker_lease (name, holder, term, expires_at) VALUES (\(name), \(next.holder), \(next.term), \(next.expiresAt))
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, term = excluded.term, expires_at = excluded.expires_at
                """)
            if next.term != current?.term {
                try await Self.append(tx, actor: holder, subject: name, event: .leaseTaken(.init(next)), at: now)
            }
            return next
        }
    }

    public func releaseLease(_ name: String, holder: String, now: Date) async throws {
        _ = try await transaction { tx in
            try await tx.execute("UPDATE broker_lease SET expires_at = \(now) WHERE name = \(name) AND holder = \(holder)")
        }
    }

    public func fenceLapsedHolder(_ name: String, claimant: String, idleLongerThan: TimeInterval, now: Date) async throws -> Int {
        try await reading { tx in
            // Read without a lock: the frozen holder may hold the row's.
            guard let current = try await Self.lease(tx, name, locking: false),
                  current.holder == claimant || current.expiresAt <= now else { return 0 }
            return try await tx.endIdleTransactions(longerThan: idleLongerThan)
        }
    }

    static func lease(_ tx: any SQLTransaction, _ name: String, locking: Bool = true) async throws -> BrokerLease? {
        let read: SQLStatement = locking ? "SELECT holder, term, expires_at FROM broker_lease WHERE name = \(name)\(.forUpdate)"
                                         : "SELECT holder, term, expires_at FROM broker_lease WHERE name = \(name)"
        return try await tx.rows(read).first.map {
            BrokerLease(holder: try $0.get("holder"), term: try $0.get("term"), expiresAt: Date(timeIntervalSince1970: try $0.get("expires_at")))
        }
    }
}
