import FedGateProto
import FedGateRounds
import Foundation

/// The broker's open task streams, one per silo: who is connected, for which data sets, with
/// which certificate, and who has gone silent (`Liveness`, in the broker's own awake time). A
/// value the coordinator owns; it sends on the streams' outboxes but decides nothing about rounds.
struct GatewaySessions {
    struct Session {
        let token: UInt64
        let outbox: AsyncStream<Fedgate_V1_BrokerMessage>.Continuation
        let datasets: Set<String>
        let certificateNotAfter: Date?
    }

    private var sessions: [String: Session] = [:]
    private var liveness: Liveness
    private var nextToken: UInt64 = 0

    init(heartbeatInterval: Duration, silentAfter: Duration, at now: ContinuousClock.Instant) {
        liveness = Liveness(tick: heartbeatInterval, silentAfter: silentAfter, at: now)
    }

    /// Opens `silo`'s session under a new token. A session it replaces (a second stream from the same
    /// silo) has its outbox finished and is returned: the silo is no longer in what it was doing.
    mutating func open(_ silo: String, datasets: [String], certificateNotAfter: Date?,
                       outbox: AsyncStream<Fedgate_V1_BrokerMessage>.Continuation, at now: ContinuousClock.Instant) -> (token: UInt64, replaced: Session?) {
        nextToken += 1
        let replaced = sessions[silo]
        replaced?.outbox.finish()
        sessions[silo] = Session(token: nextToken, outbox: outbox, datasets: Set(datasets), certificateNotAfter: certificateNotAfter)
        liveness.heard(from: silo, at: now)
        return (nextToken, replaced)
    }

    /// Closes `silo`'s session if `token` is still its own (a replaced stream's late close is
    /// ignored); whether it closed one.
    mutating func close(_ silo: String, token: UInt64) -> Bool {
        guard let s = sessions[silo], s.token == token else { return false }
        s.outbox.finish()
        sessions.removeValue(forKey: silo)
        liveness.forget(silo)
        return true
    }

    func isCurrent(_ silo: String, token: UInt64) -> Bool { sessions[silo]?.token == token }

    /// Something of `silo`'s arrived (on the stream with `token`, or any transfer when nil): it is alive.
    mutating func heard(from silo: String, token: UInt64? = nil, at now: ContinuousClock.Instant) {
        guard let s = sessions[silo], token == nil || s.token == token else { return }
        liveness.heard(from: silo, at: now)
    }

    /// The connected silos silent for longer than `silentAfter` of the broker's awake time, with their tokens.
    mutating func silent(at now: ContinuousClock.Instant) -> [(silo: String, token: UInt64)] {
        liveness.silent(at: now).compactMap { silo in sessions[silo].map { (silo, $0.token) } }
    }

    func isConnected(_ silo: String) -> Bool { sessions[silo] != nil }
    var connected: [String] { sessions.keys.sorted() }
    var count: Int { sessions.count }
    func certificateNotAfter(of silo: String) -> Date? { sessions[silo]?.certificateNotAfter }

    /// The connected silos that serve every one of `datasets`.
    func serving(_ datasets: Set<String>) -> [String] {
        sessions.filter { datasets.isSubset(of: $0.value.datasets) }.keys.sorted()
    }

    /// Queues `message` on each of these silos' streams (a silo not connected gets nothing).
    func send(_ message: Fedgate_V1_BrokerMessage, to silos: [String]) {
        for silo in silos { sessions[silo]?.outbox.yield(message) }
    }

    /// Ends every stream (the broker is stopping).
    mutating func closeAll() {
        for s in sessions.values { s.outbox.finish() }
        sessions.removeAll()
    }
}
