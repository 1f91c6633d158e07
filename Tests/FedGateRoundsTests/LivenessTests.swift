import FedGateRounds
import Testing

/// Silent gateways judged in the broker's awake time, with instants given by the test: no clock, no sleep.
@Suite("Which gateways are silent")
struct LivenessTests {
    let start = ContinuousClock.now

    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    @Test("a gateway not heard from for longer than the silence limit, while the broker ticked on time, is silent once")
    func silentGateway() {
        var l = Liveness(tick: .milliseconds(250), silentAfter: .seconds(5), at: at(0))
        l.heard(from: "a", at: at(0))
        l.heard(from: "b", at: at(0))
        var closed: [String] = []
        for t in stride(from: 250, through: 6000, by: 250) {
            l.heard(from: "b", at: at(t))
            closed += l.silent(at: at(t))
        }
        #expect(closed == ["a"], "only the mute gateway, and only once")
    }

    @Test("exactly at the limit a gateway is not yet silent; just past it, it is")
    func edge() {
        var l = Liveness(tick: .seconds(1), silentAfter: .seconds(5), at: at(0))
        l.heard(from: "a", at: at(0))
        for t in 1...5 { #expect(l.silent(at: at(t * 1000)).isEmpty) }
        #expect(l.silent(at: at(5001)) == ["a"])
    }

    @Test("a broker stalled for 30 s (no tick ran) does not blame the gateways whose heartbeats waited behind the stall")
    func brokerStall() {
        var l = Liveness(tick: .milliseconds(250), silentAfter: .seconds(5), at: at(0))
        l.heard(from: "a", at: at(0))
        #expect(l.silent(at: at(250)).isEmpty)
        // The process gets no CPU for 30 s; then the monitor's tick runs before the queued heartbeats.
        #expect(l.silent(at: at(30_250)).isEmpty)
        l.heard(from: "a", at: at(30_260))
        #expect(l.silent(at: at(30_500)).isEmpty)
        // A gateway really silent is still caught once the broker runs again.
        var closed: [String] = []
        for t in stride(from: 30_750, through: 37_000, by: 250) { closed += l.silent(at: at(t)) }
        #expect(closed == ["a"])
    }

    @Test("a forgotten gateway (its stream closed) is never reported")
    func forgotten() {
        var l = Liveness(tick: .milliseconds(100), silentAfter: .milliseconds(300), at: at(0))
        l.heard(from: "a", at: at(0))
        l.forget("a")
        var closed: [String] = []
        for t in stride(from: 100, through: 2000, by: 100) { closed += l.silent(at: at(t)) }
        #expect(closed.isEmpty)
    }
}

/// A process's own running time, for timeouts that must not blame the other side for its stall.
@Suite("Awake time")
struct AwakeClockTests {
    let start = ContinuousClock.now

    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    @Test("ticks on time count in full: awake time is wall time")
    func onTime() {
        var c = AwakeClock(tick: .milliseconds(250), at: at(0))
        for t in stride(from: 250, through: 15_000, by: 250) { c.advance(at: at(t)) }
        #expect(c.elapsed(at: at(15_000)) == .seconds(15))
    }

    @Test("a stall of 20 s between two ticks counts as two ticks, so a 15 s timeout judged in awake time has not passed")
    func stall() {
        var c = AwakeClock(tick: .milliseconds(250), at: at(0))
        c.advance(at: at(250))
        #expect(c.advance(at: at(20_250)) == .milliseconds(750))
        #expect(c.elapsed(at: at(20_250)) < .seconds(15))
        // Running again, the timeout comes 14.25 s later in wall time, not at once.
        for t in stride(from: 20_500, through: 34_500, by: 250) { c.advance(at: at(t)) }
        #expect(c.elapsed(at: at(34_500)) == .seconds(15))
    }

    @Test("looking does not advance it, and time never runs backwards")
    func looking() {
        var c = AwakeClock(tick: .seconds(1), at: at(1000))
        #expect(c.elapsed(at: at(500)) == .zero)
        #expect(c.elapsed(at: at(1500)) == .milliseconds(500))
        #expect(c.elapsed(at: at(1500)) == .milliseconds(500))
        c.advance(at: at(1500))
        #expect(c.elapsed(at: at(1200)) == .milliseconds(500))
    }
}
