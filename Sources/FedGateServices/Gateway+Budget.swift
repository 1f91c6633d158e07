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
    /// ε committed on this silo's data set, and what is left of its tightest lifetime or window cap:
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
              let spent = try? await governor.ledger.spent(dataset: dataset, delta: budget.delta) else { return }
        metrics.set("fedgate_epsilon_spent", [("dataset", dataset)], spent.committed)
        if let cap = [budget.lifetimeCap, budget.windowCap].compactMap({ $0 }).min() {
            metrics.set("fedgate_epsilon_remaining", [("dataset", dataset)], max(0, cap - spent.withReserved))
        }
    }
}
