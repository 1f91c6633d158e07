import FedGateRounds

/// The fair scheduler (`max_concurrent_rounds`): a plan takes a slot before its round's offer and
/// gives it back when the round committed or aborted; plans waiting take the freed slots in turn
/// (`RoundSlots`), so each running plan gets its rounds however fast the others ask.
extension BrokerCoordinator {
    /// Returns once the plan holds a slot for `round` (at once without a limit); throws if the plan
    /// is cancelled while it waits (its place in the queue is given up).
    func takeRoundSlot(_ hash: String, round: Int) async throws {
        guard let limit = settings.maxConcurrentRounds else { return }
        if slots == nil { slots = RoundSlots(limit: limit) }
        if slots!.ask(hash) { return }
        logger.info("round waits for a slot", metadata: ["plan": "\(hash.prefix(12))", "round": "\(round)",
                                                          "position": "\(slots!.position(of: hash) ?? 0)", "limit": "\(limit)"])
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if slots!.holders.contains(hash) { c.resume() } else { slotWaiters[hash] = c }
            }
        } onCancel: {
            Task { await self.releaseRoundSlot(hash) }
        }
        try Task.checkCancellation()
    }

    /// The plan's round ended (or the plan stopped waiting): its slot, or its place in the queue, goes
    /// to the next plan waiting, which resumes.
    func releaseRoundSlot(_ hash: String) {
        guard slots != nil else { return }
        if let next = slots!.release(hash) { slotWaiters.removeValue(forKey: next)?.resume() }
        slotWaiters.removeValue(forKey: hash)?.resume()
    }

    /// Where a plan waiting for a slot stands, for its status.
    func slotStatus(_ hash: String) -> (position: Int, limit: Int)? {
        guard let slots, let position = slots.position(of: hash) else { return nil }
        return (position, slots.limit)
    }
}
