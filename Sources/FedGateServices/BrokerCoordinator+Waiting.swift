import Crypto
import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging
import FedGateRounds

/// Round bookkeeping: aborts, messages to silos, and waiting for a round's silos until they are done or its deadline passes.
extension BrokerCoordinator {
    /// Records a round's abort and tells the offered silos (the round loop lets go of the round after).
    func abort(_ hash: String, _ number: Int, _ progress: RoundProgress, reason: String) async throws {
        try await runStore.advanceRound(planHash: hash, number: number, to: .aborted, survivors: [], at: now(), actor: settings.brokerID)
        try await runStore.audit(.roundAbandoned(.init(round: number, reason: reason)), actor: settings.brokerID,
                                                       subject: hash, at: now())
        roundEnded(hash, "aborted", participants: 0)
        plans[hash]?.rounds.append(.init(number: number, state: "aborted", participants: [], refused: progress.refused,
                                         reportedAccuracy: nil, reason: reason, flagged: active[hash].map { $0.number == number ? $0.flags : [] } ?? [],
                                         sampled: progress.sampled.sorted()))
        sendOutcome(hash, number, "aborted", [], reason, to: progress.sampled.sorted())
        logger.warning("round aborted", metadata: ["plan": "\(hash.prefix(12))", "round": "\(number)", "reason": "\(reason)"])
    }

    func advance(_ hash: String, _ number: Int, _ state: RoundRecord.State, _ survivors: [String]) async throws {
        try await runStore.advanceRound(planHash: hash, number: number, to: state, survivors: survivors, at: now(), actor: settings.brokerID)
    }

    func eligibleSilos(for plan: TrainingPlan) async -> [String] {
        let needed = Set(plan.datasets)
        func serving() -> [String] { gateways.serving(needed) }
        let until = ContinuousClock.now + settings.connectWait
        while serving().count < plan.quorum, ContinuousClock.now < until, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return serving()
    }

    func send(_ kind: Fedgate_V1_BrokerMessage.OneOf_Kind, to silos: [String]) {
        var message = Fedgate_V1_BrokerMessage()
        message.kind = kind
        gateways.send(message, to: silos)
    }

    func sendOutcome(_ hash: String, _ number: Int, _ state: String, _ participants: [String], _ reason: String, to silos: [String]) {
        var outcome = Fedgate_V1_RoundOutcome()
        outcome.planHash = hash
        outcome.round = UInt32(number)
        outcome.state = state
        outcome.participants = participants
        outcome.reason = reason
        send(.outcome(outcome), to: silos)
        sendAuditHead(to: silos)
    }

    // MARK: Waiting for a round's silos

    func waitForRound(_ hash: String, until deadline: ContinuousClock.Instant) async {
        if roundIsDone(hash) { return }
        nextWaiter += 1
        let id = nextWaiter
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            // The deadline wakes this wait only: a timer cancelled because its wait ended early must
            // not wake the next wait on the same plan (it did: a secure round's phases skipped ahead).
            let timer = Task { [weak self] in
                guard (try? await Task.sleep(until: deadline)) != nil else { return }
                await self?.wakeAtDeadline(hash, id)
            }
            waiters[hash] = Waiter(id: id, continuation: c, timer: timer)
        }
    }

    /// Whether the wait for a plan's silos can end before its deadline: the round's pure state says.
    func roundIsDone(_ hash: String) -> Bool {
        if let e = evaluations[hash] { return e.state.isComplete }
        if let a = admissions[hash] { return a.isComplete }
        guard let r = active[hash] else { return true }
        return r.machine.isWaitOver
    }

    func wakeIfDone(_ hash: String) { if roundIsDone(hash) { wake(hash) } }

    func wake(_ hash: String) {
        guard let w = waiters.removeValue(forKey: hash) else { return }
        w.timer.cancel()
        w.continuation.resume()
    }

    func wakeAtDeadline(_ hash: String, _ id: UInt64) {
        if waiters[hash]?.id == id { wake(hash) }
    }
}
