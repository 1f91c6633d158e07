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
              let entries = try? await governor.ledger.backend.entries(dataset: dataset) else { return }
        func epsilon(_ e: [LedgerEntry]) -> Double? { e.isEmpty ? 0 : try? FedGatePrivacy.epsilon(of: .composed(e.map(\.event)), delta: budget.delta) }
        let held = entries.filter { $0.state != .released }
        guard let committed = epsilon(entries.filter { $0.state == .committed }) else { return }
        metrics.set("fedgate_epsilon_spent", [("dataset", dataset)], committed)
        // One series per cap, named: the lifetime's rest (every event held) and the rolling window's
        // (the events of its last days) are different figures, and `ledger show` names the same.
        if let cap = budget.lifetimeCap, let used = epsilon(held) {
            metrics.set("fedgate_epsilon_remaining", [("dataset", dataset), ("cap", "lifetime")], max(0, cap - used))
        }
        if let cap = budget.windowCap, let days = budget.windowDays,
           let used = epsilon(held.filter { $0.createdAt >= Date().addingTimeInterval(-Double(days) * 86_400) }) {
            metrics.set("fedgate_epsilon_remaining", [("dataset", dataset), ("cap", "window")], max(0, cap - used))
        }
    }
}
