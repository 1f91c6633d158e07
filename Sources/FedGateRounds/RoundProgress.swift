import FedGateAggregation
import FedGateLearning

/// One round at the broker as a value: who was offered it, who accepted or refused (and why), who
/// uploaded. No I/O and no clock: the broker feeds it what arrives (answers, uploads, silos gone)
/// and the deadlines it keeps, and asks it whether the round goes on. Its phases:
///
///     offering ──closeOffer (quorum accepted)──▶ training ──closeTraining (quorum uploaded)──▶ closed
///         └──────────closeOffer (below quorum)──────────────────────┴──────(below quorum)────▶ closed

public struct RoundProgress: Sendable {
    public enum Phase: String, Sendable { case offering, training, closed }

    public let sampled: Set<String>
    public let quorum: Int
    public private(set) var phase = Phase.offering
    public private(set) var accepted: [String] = []
    public private(set) var refused: [String: [String]] = [:]
    public private(set) var moments: [String: ReleasedStatistics] = [:]
    public private(set) var updates: [String: ClientUpdate] = [:]
    public private(set) var metrics: [String: [String: Double]] = [:]
    /// Silos that left (disconnected or missed the deadline) before finishing their part.
    public private(set) var dropped: Set<String> = []

    public init(sampled: Set<String>, quorum: Int) {
        self.sampled = sampled
        self.quorum = quorum
    }

    /// A silo's answer to the offer. Only sampled silos answer, once, while the round is offered.
    public mutating func reply(from silo: String, accepted yes: Bool, reasons: [String], moments m: ReleasedStatistics?) throws {
        guard sampled.contains(silo) else { throw RoundRefusal.notOffered(silo) }
        guard phase == .offering else { throw RoundRefusal.offerClosed(silo) }
        guard !accepted.contains(silo), refused[silo] == nil else { throw RoundRefusal.alreadyAnswered(silo) }
        if yes {
            accepted.append(silo)
            if let m { moments[silo] = m }
        } else {
            refused[silo] = reasons.isEmpty ? ["refused without a reason"] : reasons
        }
    }

    /// The silos that accepted and have not left since.
    public var liveAccepted: [String] { accepted.filter { !dropped.contains($0) } }

    /// Every offered silo answered or left (a silo that accepted and then left counts once).
    public var everyoneAnswered: Bool { Set(accepted).union(refused.keys).union(dropped).isSuperset(of: sampled) }

    /// Closes the offer: training starts if at least `quorum` silos accepted.
    public mutating func closeOffer() -> Bool {
        guard phase == .offering else { return phase == .training }
        let live = liveAccepted
        guard live.count >= quorum else { phase = .closed; return false }
        accepted = live
        phase = .training
        return true
    }

    /// A silo's update. Only silos that accepted upload, once, while the round trains.
    public mutating func upload(_ update: ClientUpdate, metrics m: [String: Double]) throws {
        guard phase == .training else { throw RoundRefusal.outOfPhase(update.silo, phase: phase.rawValue) }
        guard accepted.contains(update.silo), !dropped.contains(update.silo) else {
            throw RoundRefusal.notParticipant(update.silo, round: nil)
        }
        guard updates[update.silo] == nil else { throw RoundRefusal.alreadyUploaded(update.silo) }
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

    /// After the offer of a plan's first round: the silos to leave out because their feature count
    /// is not the one most accepting silos agree on (or they sent none), each with the reason. The
    /// broker records each refusal, then applies it (`refuse`), so one silo cannot stop a round.
    public func featureDisagreements() -> [(silo: String, reason: String)] {
        let counts = Dictionary(grouping: accepted.compactMap { moments[$0]?.sums.count }, by: { $0 })
        let agreed = counts.max { ($0.value.count, $1.key) < ($1.value.count, $0.key) }?.key
        return accepted.filter { moments[$0]?.sums.count != agreed }.map { silo in
            (silo, moments[silo].map { "its \($0.sums.count) feature sums disagree with the \(agreed ?? 0) of the other silos" }
                ?? "it accepted without feature moments")
        }
    }

    /// The accepting silos' moments in silo order (what the consortium's standardisation combines).
    public var acceptedMoments: [ReleasedStatistics] { accepted.sorted().compactMap { moments[$0] } }

    /// Whether waiting for silos in the current phase can end before its deadline: everyone offered
    /// answered (or left), or every participant uploaded (or left).
    public var isWaitOver: Bool {
        switch phase {
        case .offering: everyoneAnswered
        case .training: everyoneUploaded
        case .closed: true
        }
    }

    /// The mean of the `accuracy` the uploading silos reported for the previous model on their
    /// held-out rows, weighted by their `eval_examples`; nil when none reported both.
    public var reportedAccuracy: Double? {
        var sum = 0.0, weight = 0.0
        for m in metrics.values {
            if let a = m["accuracy"], let n = m["eval_examples"], n > 0 { sum += a * n; weight += n }
        }
        return weight > 0 ? sum / weight : nil
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

/// A silo's message that does not fit the round: answered twice, out of turn, or not its round.
/// The round is unchanged; the broker answers the silo with the reason.
public enum RoundRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case notOffered(String)
    case offerClosed(String)
    case alreadyAnswered(String)
    /// An update while the round was not training (`phase`: what it was doing).
    case outOfPhase(String, phase: String)
    /// The silo did not accept this round, or left it (`round`: its number, when the caller knows it).
    case notParticipant(String, round: Int?)
    case alreadyUploaded(String)

    public var description: String {
        switch self {
        case .notOffered(let silo): "\(silo) was not offered this round"
        case .offerClosed(let silo): "\(silo) answered after the offer closed"
        case .alreadyAnswered(let silo): "\(silo) already answered this offer"
        case .outOfPhase(let silo, let phase): "\(silo)'s update arrived while the round was \(phase)"
        case .notParticipant(let silo, let round): "\(silo) is not a participant of \(round.map { "round \($0)" } ?? "this round")"
        case .alreadyUploaded(let silo): "\(silo) already uploaded its update for this round"
        }
    }
}
