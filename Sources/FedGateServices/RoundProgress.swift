import FedGateAggregation
import FedGateLearning

/// One round at the broker as a value: who was offered it, who accepted or refused (and why), who
/// uploaded. No I/O: the coordinator feeds it events and asks it whether to go on.
public struct RoundProgress: Sendable {
    public enum Phase: String, Sendable { case offering, training, closed }

    public let sampled: Set<String>
    public let quorum: Int
    public private(set) var phase = Phase.offering
    public private(set) var accepted: [String] = []
    public private(set) var refused: [String: [String]] = [:]
    public private(set) var moments: [String: Standardisation.Moments] = [:]
    public private(set) var updates: [String: ClientUpdate] = [:]
    public private(set) var metrics: [String: [String: Double]] = [:]
    /// Silos that left (disconnected or missed the deadline) before finishing their part.
    public private(set) var dropped: Set<String> = []

    public init(sampled: Set<String>, quorum: Int) {
        self.sampled = sampled
        self.quorum = quorum
    }

    /// A silo's answer to the offer. Only sampled silos answer, once, while the round is offered.
    public mutating func reply(from silo: String, accepted yes: Bool, reasons: [String], moments m: Standardisation.Moments?) throws {
        guard sampled.contains(silo) else { throw RoundError("\(silo) was not offered this round") }
        guard phase == .offering else { throw RoundError("\(silo) answered after the offer closed") }
        guard !accepted.contains(silo), refused[silo] == nil else { throw RoundError("\(silo) already answered this offer") }
        if yes {
            accepted.append(silo)
            if let m { moments[silo] = m }
        } else {
            refused[silo] = reasons.isEmpty ? ["refused without a reason"] : reasons
        }
    }

    public var everyoneAnswered: Bool { accepted.count + refused.count + dropped.count >= sampled.count }

    /// Closes the offer: training starts if at least `quorum` silos accepted.
    public mutating func closeOffer() -> Bool {
        guard phase == .offering else { return phase == .training }
        let live = accepted.filter { !dropped.contains($0) }
        guard live.count >= quorum else { phase = .closed; return false }
        accepted = live
        phase = .training
        return true
    }

    /// A silo's update. Only silos that accepted upload, once, while the round trains.
    public mutating func upload(_ update: ClientUpdate, metrics m: [String: Double]) throws {
        guard phase == .training else { throw RoundError("\(update.silo)'s update arrived while the round was \(phase.rawValue)") }
        guard accepted.contains(update.silo), !dropped.contains(update.silo) else {
            throw RoundError("\(update.silo) is not a participant of this round")
        }
        guard updates[update.silo] == nil else { throw RoundError("\(update.silo) already uploaded its update for this round") }
        updates[update.silo] = update
        metrics[update.silo] = m
    }

    /// The broker refuses a silo's accepted answer once the offer is closed (its moments disagree
    /// with the others'): it leaves the participants and counts as refused, with the reason.
    public mutating func refuse(_ silo: String, reason: String) {
        guard phase == .training, let i = accepted.firstIndex(of: silo), updates[silo] == nil else { return }
        accepted.remove(at: i)
        refused[silo] = ["broker: \(reason)"]
    }

    public func isParticipant(_ silo: String) -> Bool { phase == .training && accepted.contains(silo) && !dropped.contains(silo) }
    public func hasUploaded(_ silo: String) -> Bool { updates[silo] != nil }

    public var everyoneUploaded: Bool { accepted.allSatisfy { updates[$0] != nil || dropped.contains($0) } }

    /// A silo disconnected: it no longer counts on this round (an update it already sent stays).
    public mutating func drop(_ silo: String) {
        guard sampled.contains(silo), updates[silo] == nil, phase != .closed else { return }
        dropped.insert(silo)
    }

    /// Ends training at the deadline or when all have uploaded: the updates in silo order if the
    /// quorum holds (late silos are dropped), nil if it does not.
    public mutating func closeTraining() -> [ClientUpdate]? {
        guard phase == .training else { return nil }
        phase = .closed
        for silo in accepted where updates[silo] == nil { dropped.insert(silo) }
        guard updates.count >= quorum else { return nil }
        return updates.keys.sorted().map { updates[$0]! }
    }
}

public struct RoundError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
