import FedGateStore
import Foundation
import Logging

/// The store as a plan's run uses it: each call waits out a database that cannot be reached
/// (restarting, connection lost: `LedgerError.unavailable`) for up to `patience`, retrying with a
/// growing pause, so a PostgreSQL restart delays a round instead of failing its plan. Every other
/// error passes at once, and so does `unavailable` once the patience is spent.
///
/// A decorator: each write is one transaction, so a retried one happened whole or not at all (one
/// whose answer was lost with the connection is refused on retry, and its plan fails with the
/// store's reason). Requests from people (`plan submit`, `status`) use the store itself and fail at once.
struct RetryingStore: RoundRecords, ModelRegistry, PlanRunRecords, AuditLog {
    let base: any BrokerStore
    let patience: Duration
    let logger: Logger
    let metrics: FedGateMetrics

    func retrying<T>(_ body: () async throws -> T) async throws -> T {
        let until = ContinuousClock.now + patience
        var pause = Duration.milliseconds(100)
        while true {
            do { return try await body() } catch LedgerError.unavailable(let reason) where ContinuousClock.now < until {
                logger.warning("the store cannot be reached; retrying", metadata: ["reason": "\(reason)", "in": "\(pause)"])
                metrics.count("fedgate_store_retries_total")
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    // MARK: Rounds

    func openRound(_ round: RoundRecord, actor: String) async throws {
        try await retrying { try await base.openRound(round, actor: actor) }
    }

    func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws {
        try await retrying { try await base.advanceRound(planHash: planHash, number: number, to: state, survivors: survivors, at: at, actor: actor) }
    }

    func rounds(planHash: String) async throws -> [RoundRecord] {
        try await retrying { try await base.rounds(planHash: planHash) }
    }

    // MARK: Model registry

    func addModelVersion(_ draft: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int {
        try await retrying { try await base.addModelVersion(draft, content: content, actor: actor) }
    }

    func modelVersions() async throws -> [ModelVersion] { try await retrying { try await base.modelVersions() } }

    func modelContent(sha256: String) async throws -> [UInt8]? { try await retrying { try await base.modelContent(sha256: sha256) } }

    // MARK: Plan runs

    func startPlanRun(_ run: PlanRun, submission: AuditEvent.PlanSubmission, actor: String) async throws {
        try await retrying { try await base.startPlanRun(run, submission: submission, actor: actor) }
    }

    func commitRound(planHash: String, number: Int, survivors: [String], checkpoint: PlanRun.Checkpoint, content: [UInt8],
                     fence: LeaseFence?, at: Date, actor: String) async throws {
        try await retrying {
            try await base.commitRound(planHash: planHash, number: number, survivors: survivors, checkpoint: checkpoint, content: content,
                                       fence: fence, at: at, actor: actor)
        }
    }

    func finishPlanRun(planHash: String, state: PlanRun.State, reason: String?, fence: LeaseFence?, at: Date, actor: String) async throws {
        try await retrying { try await base.finishPlanRun(planHash: planHash, state: state, reason: reason, fence: fence, at: at, actor: actor) }
    }

    func planRuns() async throws -> [PlanRun] { try await retrying { try await base.planRuns() } }

    // MARK: Audit log

    func audit(_ event: AuditEvent, actor: String, subject: String, at: Date) async throws {
        try await retrying { try await base.audit(event, actor: actor, subject: subject, at: at) }
    }

    func auditRecords() async throws -> [AuditRecord] { try await retrying { try await base.auditRecords() } }

    func auditTail() async throws -> (seq: Int, hash: String)? { try await retrying { try await base.auditTail() } }

    func record(_ head: AuditHead) async throws { try await retrying { try await base.record(head) } }

    func auditHeads() async throws -> [AuditHead] { try await retrying { try await base.auditHeads() } }

    func witness(_ head: AuditHead, receivedAt: Date) async throws {
        try await retrying { try await base.witness(head, receivedAt: receivedAt) }
    }

    func witnessedHeads(signer: String?) async throws -> [AuditHead] { try await retrying { try await base.witnessedHeads(signer: signer) } }
}
