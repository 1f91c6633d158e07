/// Time in which this process was running, measured by a ticker: a tick that comes late (the
/// process starved of CPU, frozen, its task pool busy) counts at most `2 × tick` of the gap. A
/// timeout judged in awake time does not blame the other side for this process's own stall.
/// No clock of its own: the caller passes the instants.
public struct AwakeClock: Sendable {
    public let tick: Duration
    private var awake: Duration = .zero
    private var lastTick: ContinuousClock.Instant

    public init(tick: Duration, at now: ContinuousClock.Instant) {
        self.tick = tick
        lastTick = now
    }

    /// The awake time at `now`, without advancing the clock.
    public func elapsed(at now: ContinuousClock.Instant) -> Duration { awake + min(max(.zero, now - lastTick), tick * 2) }

    /// A tick at `now`: the awake time so far.
    @discardableResult
    public mutating func advance(at now: ContinuousClock.Instant) -> Duration {
        awake = elapsed(at: now)
        lastTick = now
        return awake
    }
}
