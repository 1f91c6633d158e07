import FedGatePrivacy
import Foundation
import Testing
@testable import FedGateStore

/// Where a data set stands, from its entries alone: what the ledger shows, the gateway's metrics and
/// the reservation check all count the same way.
@Suite("A data set's standing")
struct BudgetStandingTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let run = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 200)

    func entry(_ state: LedgerState, daysAgo: Double) -> LedgerEntry {
        LedgerEntry(id: UUID().uuidString, dataset: "d", planHash: "p", round: 1, event: run, state: state,
                    createdAt: now.addingTimeInterval(-daysAgo * 86_400), settledAt: nil)
    }

    @Test("committed, held, the lifetime's rest over every held event and the window's over its days; released entries count for nothing")
    func standing() throws {
        let budget = DatasetBudget(name: "d", delta: 1e-5, perPlanCap: 5, windowDays: 30, windowCap: 5, lifetimeCap: 10)
        let entries = [entry(.committed, daysAgo: 40), entry(.reserved, daysAgo: 1), entry(.released, daysAgo: 1)]
        let s = try BudgetStanding(budget, entries: entries, at: now)
        let one = try epsilon(of: run, delta: 1e-5), two = try epsilon(of: .composed([run, run]), delta: 1e-5)
        #expect(abs(s.committed - one) < 1e-12 && abs(s.withReserved - two) < 1e-12)
        #expect(abs((s.lifetimeRemaining ?? -1) - (10 - two)) < 1e-12)
        #expect(abs((s.windowRemaining ?? -1) - (5 - one)) < 1e-12, "the 40-day-old commit is outside the 30-day window")
        #expect(budget.inWindow(entries, at: now).count == 2)
        let bare = try BudgetStanding(DatasetBudget(name: "d", delta: 1e-5, perPlanCap: 5), entries: [], at: now)
        #expect(bare.committed == 0 && bare.withReserved == 0 && bare.lifetimeRemaining == nil && bare.windowRemaining == nil)
    }
}
