import FedGatePrivacy
import FedGateRounds
import FedGateStore
import Logging

/// The silo's privacy-budget reservations for the rounds in flight, by round: reserved when the
/// silo accepts a round's offer, committed as the round's update is about to leave, released when
/// the round ends without it (aborted, the stream gone, the gateway restarted). The ledger calls of
/// a commit or release run to their end even when the round's task is cancelled meanwhile: one cut
/// short would leave its reservation neither settled nor held here.
actor BudgetReservations {
    let ledger: PrivacyLedger
    /// Who the ledger's audit records name.
    let silo: String
    let logger: Logger
    private var held: [RoundKey: [String]] = [:]

    init(ledger: PrivacyLedger, silo: String, logger: Logger) {
        self.ledger = ledger
        self.silo = silo
        self.logger = logger
    }

    /// Reserves `event` on each data set for the round, once (a repeated offer of the same round
    /// reserves nothing more); if one data set refuses, what was reserved for the others is released.
    func reserve(_ key: RoundKey, _ event: DPEvent, datasets: [String]) async throws {
        guard held[key] == nil else { return }
        var ids: [String] = []
        do {
            for dataset in datasets {
                ids.append(try await ledger.reserve(event, dataset: dataset, plan: key.plan, round: Int(key.round), actor: silo))
            }
        } catch {
            for id in ids { await release(id) }
            throw error
        }
        held[key] = ids
    }

    /// Commits the round's reservations: its update is about to leave. If a commit fails, the update
    /// must not leave: what was not committed is released at once, and the error is thrown.
    func commit(_ key: RoundKey) async throws {
        guard let ids = held.removeValue(forKey: key), !ids.isEmpty else { return }
        let failure: (any Error)? = await Task {
            for (i, id) in ids.enumerated() {
                do { try await ledger.commit(id, actor: silo) } catch {
                    for open in ids[i...] { await release(open) }
                    return error
                }
            }
            return nil
        }.value
        if let failure { throw failure }
    }

    /// Spends `event` on each data set now (reserved, then committed), for a release that leaves
    /// at once (the plan's statistics, recorded as round 0 of the plan; a final evaluation with DP,
    /// as its last round). If any data set refuses or a commit fails, what was not committed is
    /// released and the error is thrown: the values must not leave then.
    func spend(_ event: DPEvent, plan: String, round: UInt32 = 0, datasets: [String]) async throws {
        let key = RoundKey(plan, round)
        try await reserve(key, event, datasets: datasets)
        try await commit(key)
    }

    /// Releases the round's reservations still open: no update of it left, nothing was spent.
    func release(_ key: RoundKey) async {
        // After a commit nothing is left: the usual end of a round costs no task.
        guard let ids = held.removeValue(forKey: key), !ids.isEmpty else { return }
        await Task { for id in ids { await release(id) } }.value
    }

    /// The task stream ended: every round in flight is over for this silo, and what it reserved and
    /// never sent is released.
    func releaseAll() async {
        let all = held
        held.removeAll()
        await Task {
            for (key, ids) in all {
                for id in ids { await release(id) }
                logger.notice("released the reservation of a round left when the stream ended", metadata: ["silo": "\(silo)", "round": "\(key)"])
            }
        }.value
    }

    /// A reservation still open when the gateway (re)starts belongs to a round whose update never
    /// left (updates are committed before they are sent): nothing was spent, so it is released.
    func releaseLeftovers(dataset: String) async {
        held.removeAll()
        do {
            for entry in try await ledger.backend.entries(dataset: dataset) where entry.state == .reserved {
                try await ledger.release(entry.id, actor: silo)
                logger.notice("released a reservation left by an earlier run", metadata: [
                    "silo": "\(silo)", "plan": "\(entry.planHash.prefix(12))", "round": "\(entry.round)"])
            }
        } catch {
            logger.error("could not release leftover reservations", metadata: ["silo": "\(silo)", "error": "\(error)"])
        }
    }

    /// One reservation released; a failure is logged (the next start releases what is left).
    private nonisolated func release(_ id: String) async {
        do { try await ledger.release(id, actor: silo) } catch {
            logger.error("could not release a reservation", metadata: ["silo": "\(silo)", "id": "\(id)", "error": "\(error)"])
        }
    }
}
