import FedGateAggregation
import FedGateStore
import Foundation

/// Poisoning flags: an update a round left out as a likely attack (a robust aggregator excluded it,
/// or validation refused its content) is recorded where people look: the audit (`attack.flag`,
/// subject the silo), the metrics (`fedgate_attack_flags_total{kind}`), the round's status and the
/// compliance report. A silo flagged in `attackAlertRounds` rounds of a plan raises `attack.alert`
/// once (`fedgate_attack_alerts_total`, the plan's status). Under secure aggregation the broker
/// sees no update, so nothing can be flagged: robust strategies are refused with it.
extension BrokerCoordinator {
    func flag(_ hash: String, round: Int, _ flags: [AttackFlag]) async throws {
        guard !flags.isEmpty else { return }
        // The round's and the plan's tallies change before any await, so concurrent uploads cannot lose one.
        if active[hash]?.number == round { active[hash]!.flags += flags }
        var watch = attackWatches[hash] ?? AttackWatch(alertAfter: settings.attackAlertRounds)
        let raised = watch.record(round: round, flags)
        attackWatches[hash] = watch
        for alert in raised { plans[hash]?.alerts.append(.init(silo: alert.silo, rounds: alert.rounds)) }

        for f in flags {
            metrics.count("fedgate_attack_flags_total", [("kind", f.kind.rawValue)])
            logger.warning("update flagged as a likely attack", metadata: ["plan": "\(hash.prefix(12))", "round": "\(round)", "silo": "\(f.silo)",
                                                                           "flag": "\(f.kind.rawValue)", "reason": "\(f.reason)"])
            try await runStore.audit(.attackFlagged(.init(plan: hash, round: round, kind: f.kind.rawValue, reason: f.reason)),
                                     actor: settings.brokerID, subject: f.silo, at: now())
        }
        for alert in raised {
            metrics.count("fedgate_attack_alerts_total")
            logger.error("silo flagged as a likely attacker round after round", metadata: [
                "plan": "\(hash.prefix(12))", "silo": "\(alert.silo)", "rounds": "\(alert.rounds)"])
            try await runStore.audit(.attackAlert(.init(plan: hash, rounds: alert.rounds, alertAfter: watch.alertAfter)),
                                     actor: settings.brokerID, subject: alert.silo, at: now())
        }
    }

    /// A recovered run's flags so far, from its audit records since it was submitted: the plan's
    /// tally goes on where the last broker left it, and its alerts stay in its status.
    static func attackWatch(_ hash: String, since submitted: Date, alertAfter: Int,
                            records: [AuditRecord]) -> (watch: AttackWatch, alerts: [PlanStatus.AttackAlert]) {
        var watch = AttackWatch(alertAfter: alertAfter)
        var alerts: [PlanStatus.AttackAlert] = []
        for record in records where record.at >= submitted {
            switch try? AuditEvent(action: record.action, payload: record.payload) {
            case .attackFlagged(let f)? where f.plan == hash:
                let flag = AttackFlag(silo: record.subject, kind: AttackFlag.Kind(rawValue: f.kind) ?? .excluded, reason: f.reason)
                alerts += watch.record(round: f.round, [flag]).map { PlanStatus.AttackAlert(silo: $0.silo, rounds: $0.rounds) }
            default:
                continue
            }
        }
        return (watch, alerts)
    }
}
