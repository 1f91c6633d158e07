/// Which gateways have gone silent, judged in the broker's own awake time. A gateway is silent when
/// nothing arrived from it for `silentAfter` of time in which the broker itself was running: a
/// broker process that was starved of CPU (a loaded machine, a pause) cannot tell a silent gateway
/// from its own stall, so a monitor tick that comes late counts at most `2 × tick` of the gap.
/// No clock of its own: the broker passes the instants.
public struct Liveness: Sendable {
    public var tick: Duration { clock.tick }
    public let silentAfter: Duration
    private var clock: AwakeClock
    private var lastHeard: [String: Duration] = [:]

    public init(tick: Duration, silentAfter: Duration, at now: ContinuousClock.Instant) {
        self.silentAfter = silentAfter
        clock = AwakeClock(tick: tick, at: now)
    }

    /// Something arrived from `silo` (a heartbeat, an answer, a transfer).
    public mutating func heard(from silo: String, at now: ContinuousClock.Instant) {
        lastHeard[silo] = clock.elapsed(at: now)
    }

    public mutating func forget(_ silo: String) { lastHeard.removeValue(forKey: silo) }

    /// The monitor's tick: the silos silent for longer than `silentAfter` of awake time (forgotten).
    public mutating func silent(at now: ContinuousClock.Instant) -> [String] {
        let awake = clock.advance(at: now)
        let gone = lastHeard.filter { awake - $0.value > silentAfter }.keys.sorted()
        for silo in gone { lastHeard.removeValue(forKey: silo) }
        return gone
    }
}
