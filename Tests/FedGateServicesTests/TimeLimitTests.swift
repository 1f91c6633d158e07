import FedGatePKI
import FedGateStore
import Foundation
import Synchronization
import Testing
@testable import FedGateConsortiumTesting
@testable import FedGateServices

/// Calls a peer waits on end: a broker's store that stops answering fails a silo's call instead of
/// holding it, and a silo's round transfers end by the round's deadline.
@Suite("Time limits on the calls a peer waits on")
struct TimeLimitTests {
    @Test("a call that answers in time gives its answer, an absent party included")
    func answersInTime() async throws {
        #expect(try await answered(within: .seconds(60)) { 42 } == 42)
        let none: String? = try await answered(within: .seconds(60)) { nil }
        #expect(none == nil)
    }

    @Test("a call that never answers fails with the limit once it has passed, and is cancelled")
    func neverAnswers() async throws {
        let cancelled = Mutex(false)
        await #expect(throws: TimeLimitExceeded.self) {
            try await answered(within: .milliseconds(50)) {
                do { try await Task.sleep(for: .seconds(3600)) } catch { cancelled.withLock { $0 = true }; throw error }
                return 1
            }
        }
        #expect(cancelled.withLock { $0 }, "the call was not cancelled")
    }

    @Test("a call that fails in time fails with its own error")
    func failsInTime() async throws {
        await #expect(throws: LedgerError.self) {
            try await answered(within: .seconds(60)) { () async throws -> Int in throw LedgerError.unavailable("down") }
        }
    }

    @Test("a silo's store that does not answer refuses its admission with words to try again, not a hang")
    func admissionRefusedWhenStoreHangs() async throws {
        let reason = await BrokerHost.admission(of: try Identity(id: "hospital-0", role: .silo, region: "eu"), lookup: { _ in
            try await Task.sleep(for: .seconds(3600))
            return nil
        }, within: .milliseconds(50))
        #expect(reason?.contains("cannot check silo 'hospital-0'") == true && reason?.contains("does not answer); try again") == true, "\(reason ?? "admitted")")
    }

    @Test("a round's transfer may run until the round's deadline and the grace, at most the upload timeout")
    func transferTimeout() {
        let now = Date(timeIntervalSince1970: 1_000)
        func timeout(_ deadlineMs: Int64?) -> Duration {
            Gateway.transferTimeout(until: deadlineMs, now: now, grace: .seconds(10), cap: .seconds(600))
        }
        #expect(timeout(1_030_000) == .seconds(40))
        #expect(timeout(1_000_000) == .seconds(10), "at the deadline: the grace")
        #expect(timeout(900_000) == .seconds(10), "past the deadline: still the grace, for a broker's clock ahead of ours")
        #expect(timeout(5_000_000) == .seconds(600), "never past the upload timeout")
        #expect(timeout(nil) == .seconds(600), "no deadline stated: the upload timeout")
    }
}
