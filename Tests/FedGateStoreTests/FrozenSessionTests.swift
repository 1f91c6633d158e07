import Foundation
import Synchronization
import Testing
@_spi(Testing) @testable import FedGateStore

/// PostgreSQL sessions that stop answering: a broker frozen (SIGSTOP, a paused VM) inside a
/// transaction holds its locks for as long as it stays frozen, and a session the server ends
/// between two statements must fail its call, not hold it for ever.
@Suite("Frozen and ended PostgreSQL sessions")
struct FrozenSessionTests {
    /// Two stores, as two processes have them, on one new migrated database; nil without PostgreSQL
    /// outside CI.
    func twoProcesses() async throws -> (PostgresLedger, PostgresLedger)? {
        guard let url = Backend.postgresServer() else { return nil }
        let database = try await PostgresLedger.scratchURL(on: url, prefix: "fedgate_f_")
        let a = try PostgresLedger(url: database), b = try PostgresLedger(url: database)
        _ = try await a.applyMigrations(try Migration.load(from: Backend.migrations))
        return (a, b)
    }

    /// A transaction that takes the lease lock and the lease's row, then stops between two
    /// statements until thawed, as a process frozen there would. `pid` is its session's.
    struct FrozenTransaction {
        let pid: Int
        let thaw: Latch<Void>
        let call: Task<Int, any Error>

        static func start(on store: PostgresLedger, lease: String) async throws -> FrozenTransaction {
            let session = Latch<Int>(), thaw = Latch<Void>()
            let call = Task {
                try await store.transaction { tx in
                    try await tx.lock(.leases)
                    _ = try await PostgresLedger.lease(tx, lease)
                    guard let row = try await tx.rows("SELECT pg_backend_pid() AS pid").first else { throw LedgerError.storage("no pid") }
                    session.open(try row.get("pid", as: Int.self))
                    await thaw.value()
                    return try await tx.execute("SELECT 1")
                }
            }
            return FrozenTransaction(pid: await session.value(), thaw: thaw, call: call)
        }
    }

    func sessionAlive(_ pid: Int, seenBy store: PostgresLedger) async throws -> Bool {
        try await store.reading { tx in
            try await tx.rows("SELECT pid FROM pg_stat_activity WHERE pid = \(pid)").isEmpty == false
        }
    }

    @Test("a session the server ends between two statements of a transaction fails the call as unavailable at once; nothing of it is kept")
    func endedSessionFailsTheCall() async throws {
        guard let (a, b) = try await twoProcesses() else { return }
        defer { a.shutdown(); b.shutdown() }
        let name = unique("lease")
        _ = try #require(try await a.claimLease(name, holder: "broker-a", duration: 60, now: Date(), renewing: nil))
        let frozen = try await FrozenTransaction.start(on: a, lease: name)
        try await b.executeForTesting("SELECT pg_terminate_backend(\(frozen.pid))")
        while try await sessionAlive(frozen.pid, seenBy: b) { await Task.yield() }
        // Thawed, it sends its next statement on the ended session: PostgresNIO alone would wait
        // for that answer for ever; the call ends with the session.
        frozen.thaw.open(())
        let outcome = await firstOf(seconds: 60) { await frozen.call.result }
        let result = try #require(outcome, "the call did not end when its session did")
        if case .failure(let error as LedgerError) = result, case .unavailable = error {} else { Issue.record("not unavailable: \(result)") }
        // The pool goes on with a new session, and the lease is as it was.
        #expect(try await a.claimLease(name, holder: "broker-a", duration: 60, now: Date(), renewing: 1)?.term == 1)
    }

    @Test("a standby finds the lapsed lease's holder frozen inside a transaction holding the lease's locks: it ends that session and takes the lease with the next term; the chain verifies")
    func standbyFencesFrozenHolder() async throws {
        guard let (a, b) = try await twoProcesses() else { return }
        defer { a.shutdown(); b.shutdown() }
        let name = unique("lease"), duration = 1.0
        _ = try #require(try await a.claimLease(name, holder: "broker-a", duration: duration, now: Date(), renewing: nil))
        let frozen = try await FrozenTransaction.start(on: a, lease: name)
        defer { frozen.thaw.open(()) }
        // The standby's loop (`BrokerHost.lead`): fence, then claim; a claim that meets the frozen
        // locks gives up after a third of the lease and is tried again.
        let taken = await firstOf(seconds: 60) { () -> BrokerLease? in
            while true {
                _ = try? await b.fenceLapsedHolder(name, claimant: "broker-b", idleLongerThan: duration, now: Date())
                do {
                    if let lease = try await b.claimLease(name, holder: "broker-b", duration: duration, now: Date(), renewing: nil) { return lease }
                } catch let error as LedgerError {
                    guard case .unavailable = error else { Issue.record("the claim failed: \(error)"); return nil }
                } catch { Issue.record("the claim failed: \(error)"); return nil }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let lease = try #require(taken ?? nil, "the standby never took the lease from the frozen holder")
        #expect(lease.holder == "broker-b" && lease.term == 2)
        #expect(try await !sessionAlive(frozen.pid, seenBy: b), "the frozen session was ended")
        let result = try #require(await firstOf(seconds: 60) { await frozen.call.result })
        #expect(throws: LedgerError.self) { _ = try result.get() }
        // Thawed, the old holder cannot renew: the term moved on.
        #expect(try await a.claimLease(name, holder: "broker-a", duration: 30, now: Date(), renewing: 1) == nil)
        let records = try await b.auditRecords()
        #expect(AuditVerification.verify(records) == .intact(records: records.count))
        #expect(records.filter { $0.action == "broker.lease" && $0.subject == name }.map(\.actor) == ["broker-a", "broker-b"])
    }

    @Test("while the holder's lease runs, nothing is fenced however long its transaction idles; thawed, it commits")
    func runningLeaseIsNotFenced() async throws {
        guard let (a, b) = try await twoProcesses() else { return }
        defer { a.shutdown(); b.shutdown() }
        let name = unique("lease")
        _ = try #require(try await a.claimLease(name, holder: "broker-a", duration: 600, now: Date(), renewing: nil))
        let frozen = try await FrozenTransaction.start(on: a, lease: name)
        #expect(try await b.fenceLapsedHolder(name, claimant: "broker-b", idleLongerThan: 0, now: Date()) == 0)
        #expect(try await sessionAlive(frozen.pid, seenBy: b))
        frozen.thaw.open(())
        #expect(try await frozen.call.value == 1)
    }

    @Test("SQLite has no other session to fence: nothing is ended")
    func sqliteFencesNothing() async throws {
        let s = try #require(try await Backend.sqlite.ledger()?.backend as? any BrokerStore)
        let name = unique("lease")
        _ = try #require(try await s.claimLease(name, holder: "broker-a", duration: 1, now: Date(), renewing: nil))
        #expect(try await s.fenceLapsedHolder(name, claimant: "broker-b", idleLongerThan: 0, now: Date().addingTimeInterval(5)) == 0)
    }
}

/// A value set once and awaited by any number of tasks.
final class Latch<T: Sendable>: Sendable {
    private let state = Mutex<(value: T?, waiting: [CheckedContinuation<T, Never>])>((nil, []))

    func open(_ value: T) {
        let waiting = state.withLock { state -> [CheckedContinuation<T, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiting = [] }
            return state.waiting
        }
        waiting.forEach { $0.resume(returning: value) }
    }

    func value() async -> T {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> T? in
                if let value = state.value { return value }
                state.waiting.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// `work`'s result, or nil when it has not answered within `seconds`; a call that hangs is left
/// behind, not awaited, so that a regression fails the test instead of hanging the suite.
func firstOf<T: Sendable>(seconds: Double, _ work: @escaping @Sendable () async -> T) async -> T? {
    let answer = Latch<T?>()
    Task { answer.open(await work()) }
    Task {
        try? await Task.sleep(for: .seconds(seconds))
        answer.open(nil)
    }
    return await answer.value()
}
