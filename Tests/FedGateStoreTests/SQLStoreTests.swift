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
        try await s.executeForTesting("UPDATE rounds SET deadline = 'tomorrow'")
        do {
            _ = try await s.rounds(planHash: plan)
            Issue.record("a text deadline was read")
        } catch let LedgerError.storage(reason) {
            #expect(reason.contains("column 'deadline' holds 'tomorrow'") && reason.contains("restore it from a backup"), "\(reason)")
        }
    }
}

/// PostgreSQL ends a session left idle inside a transaction, so a process frozen mid-transaction
/// cannot hold its locks for ever.
@Suite("PostgreSQL sessions left inside a transaction")
struct IdleTransactionTests {
    @Test("a session frozen inside a transaction, holding a data set's row, is ended by the server: another process's reservation of that data set goes through")
    func frozenHolderReleased() async throws {
        guard let url = ProcessInfo.processInfo.environment["FEDGATE_TEST_POSTGRES_URL"] else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must run the PostgreSQL tests: FEDGATE_TEST_POSTGRES_URL is not set") }
            return
        }
        let database = try await PostgresLedger.scratchURL(on: url, prefix: "fedgate_t_")
        let (frozen, other) = (try PostgresLedger(url: database), try PostgresLedger(url: database))
        defer { frozen.shutdown(); other.shutdown() }
        _ = try await other.applyMigrations(try Migration.load(from: Backend.migrations))
        let ds = unique("icu")
        try await other.save(DatasetBudget(name: ds, delta: 1e-5, perPlanCap: 5, lifetimeCap: 10))
        // The frozen process: inside a transaction, the data set's row locked, then nothing more.
        let locked = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            try await frozen.client.withConnection { conn in
                try await conn.query("BEGIN", logger: frozen.logger)
                try await conn.query("SELECT name FROM datasets WHERE name = \(ds) FOR UPDATE", logger: frozen.logger)
                locked.continuation.yield()
                try await Task.sleep(for: .seconds(3600))
            }
        }
        defer { holder.cancel() }
        for await _ in locked.stream { break }
        let ledger = PrivacyLedger(backend: other)
        let reserved = try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask { try await ledger.reserve(.gaussian(noiseMultiplier: 16), dataset: ds, plan: "plan-a", round: 1) }
            group.addTask {
                try await Task.sleep(for: .seconds(120))
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        #expect(reserved != nil, "the reservation still waited on the frozen session's lock after 120 s")
        #expect(try await ledger.backend.entries(dataset: ds).map(\.state) == [.reserved])
    }
}
