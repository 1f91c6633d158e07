import Crypto
import Foundation
import Testing
@_spi(Testing) @testable import FedGateStore

/// The one SQL store under both backends: statements rendered per dialect, transactions that land
/// whole or not at all, writers serialised (SQLite's writer is held across a transaction's
/// statements), a cancelled caller that never leaves the writer stuck, and rows edited outside
/// FedGate refused with the column named.
@Suite("One SQL store over PostgreSQL and SQLite")
struct SQLStoreTests {
    func store(_ backend: Backend) async throws -> (any BrokerStore)? {
        try await backend.ledger()?.backend as? any BrokerStore
    }

    func version(_ plan: String, _ byte: UInt8) -> (ModelVersion, [UInt8]) {
        let bytes = [UInt8](repeating: byte, count: 32)
        let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        return (ModelVersion(version: 0, planHash: plan, round: Int(byte), contentSHA256: sha, participants: ["a"], epsilonPerSilo: ["a": 1],
                             metrics: ["accuracy": 0.9], parent: nil, createdAt: Date()), bytes)
    }

    @Test("a statement is written once: values become each dialect's placeholders in order, FOR UPDATE only where it exists")
    func rendering() {
        let hash = "p'; DROP TABLE rounds; --", number = 3
        let statement: SQLStatement = "SELECT state FROM rounds WHERE plan_hash = \(hash) AND number = \(number)\(.forUpdate)"
        let pg = statement.render(.postgres), lite = statement.render(.sqlite)
        #expect(pg.sql == "SELECT state FROM rounds WHERE plan_hash = $1 AND number = $2 FOR UPDATE")
        #expect(lite.sql == "SELECT state FROM rounds WHERE plan_hash = ? AND number = ?")
        #expect(pg.values == [.text(hash), .integer(3)] && lite.values == pg.values)
        let reason: String? = nil
        #expect((("UPDATE plan_runs SET reason = \(reason)") as SQLStatement).render(.sqlite).values == [.null])
    }

    @Test("a change refused inside its transaction leaves nothing: no row, no audit record, and the next write goes through", arguments: Backend.allCases)
    func refusedLeavesNothing(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let plan = unique("plan")
        try await s.openRound(RoundRecord(planHash: plan, number: 1, state: .planned, sampled: ["a"], survivors: [], deadline: Date(), updatedAt: Date()),
                              actor: "broker")
        let before = try await s.auditRecords().count
        // planned → committed is not a transition: refused after the round's row was read and locked.
        await #expect(throws: LedgerError.self) {
            try await s.advanceRound(planHash: plan, number: 1, to: .committed, survivors: ["a"], at: Date(), actor: "broker")
        }
        #expect(try await s.auditRecords().count == before)
        #expect(try await s.rounds(planHash: plan).map(\.state) == [.planned])
        try await s.advanceRound(planHash: plan, number: 1, to: .offered, survivors: [], at: Date(), actor: "broker")
        #expect(try await s.rounds(planHash: plan).map(\.state) == [.offered])
    }

    @Test("writers at once, through the SQL store and the backends' own writes alike: every version number once, one intact audit chain", arguments: Backend.allCases)
    func concurrentWriters(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let plan = unique("plan"), n = 12
        let versions = try await withThrowingTaskGroup(of: Int?.self) { group in
            for i in 0..<n {
                group.addTask {
                    let (v, bytes) = version(plan, UInt8(i + 1))
                    return try await s.addModelVersion(v, content: bytes, actor: "broker")
                }
                group.addTask {
                    try await s.audit(.roundAbandoned(.init(round: i, reason: "concurrency")), actor: "broker", subject: plan, at: Date())
                    return nil
                }
            }
            var out: [Int] = []
            for try await v in group { if let v { out.append(v) } }
            return out
        }
        #expect(versions.sorted() == Array(1...n))
        let records = try await s.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        #expect(records.filter { $0.subject == plan }.count == 2 * n)
    }

    @Test("a caller cancelled at any point of its transaction never leaves the writer inside it", arguments: Backend.allCases)
    func cancelledCallers(_ backend: Backend) async throws {
        guard let s = try await store(backend) else { return }
        let plan = unique("plan")
        for i in 0..<20 {
            let (v, bytes) = version(plan, UInt8(i + 1))
            let task = Task { try await s.addModelVersion(v, content: bytes, actor: "broker") }
            if i % 2 == 0 { await Task.yield() }
            task.cancel()
            _ = await task.result
            // Whatever the cancelled call did, it did whole or not at all, and the store still writes.
            try await s.audit(.roundAbandoned(.init(round: i, reason: "after a cancelled call")), actor: "broker", subject: plan, at: Date())
        }
        let records = try await s.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        let stored = try await s.modelVersions().filter { $0.planHash == plan }
        #expect(records.filter { $0.action == "model.version" && $0.subject == plan }.count == stored.count)
    }

    @Test("a row edited outside FedGate is refused with the column named and what to do, never read as a value")
    func editedOutside() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-sql-\(UUID().uuidString).sqlite").path
        let s = try SQLiteLedger(path: path)
        _ = try await s.applyMigrations(try Migration.load(from: Backend.migrations))
        let plan = unique("plan")
        try await s.openRound(RoundRecord(planHash: plan, number: 1, state: .planned, sampled: ["a"], survivors: [], deadline: Date(), updatedAt: Date()),
                              actor: "broker")
        try await s.executeForTesting("UPDATE plan_rounds SET deadline = 'tomorrow'")
        do {
            _ = try await s.rounds(planHash: plan)
            Issue.record("a text deadline was read")
        } catch let LedgerError.storage(reason) {
            #expect(reason.contains("column 'deadline' holds 'tomorrow'") && reason.contains("restore it from a backup"), "\(reason)")
        }
    }
}
