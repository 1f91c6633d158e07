import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// The silo's budget as metrics (`fedgate_epsilon_spent`, `_remaining`), from its own ledger.
extension Gateway {
    /// ε committed on this silo's data set, and what is left of its lifetime and window caps:
    /// only when `/metrics` is served, and off the round's path (composing a long ledger is not free;
    /// the bench saw a tiny round's gateway CPU double when this ran inline).
    func refreshBudgetMetrics() async {
        guard settings.budgetMetrics else { return }
        guard budgetRefresh == nil else { budgetDirty = true; return }
        budgetRefresh = Task { [weak self] in
            await self?.computeBudgetMetrics()
            await self?.budgetRefreshed()
        }
    }

    func budgetRefreshed() async {
        budgetRefresh = nil
        if budgetDirty {
            budgetDirty = false
            await refreshBudgetMetrics()
        }
    }

    func computeBudgetMetrics() async {
        let dataset = settings.dataset
        guard let budget = try? await governor.ledger.backend.budget(dataset),
              let entries = try? await governor.ledger.backend.entries(dataset: dataset),
              let standing = try? BudgetStanding(budget, entries: entries, at: Date()) else { return }
        metrics.set("fedgate_epsilon_spent", [("dataset", dataset)], standing.committed)
        // One series per cap, named: the lifetime's rest (what `ledger show` calls remaining) and the
        // rolling window's are different figures.
        if let rest = standing.lifetimeRemaining { metrics.set("fedgate_epsilon_remaining", [("dataset", dataset), ("cap", "lifetime")], rest) }
        if let rest = standing.windowRemaining { metrics.set("fedgate_epsilon_remaining", [("dataset", dataset), ("cap", "window")], rest) }
    }
}
