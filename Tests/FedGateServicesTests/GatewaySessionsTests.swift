import FedGateProto
@testable import FedGateServices
import Foundation
import Testing

/// The broker's open task streams on their own: no network, instants given by the test.
@Suite("The broker's gateway sessions")
struct GatewaySessionsTests {
    let start = ContinuousClock.now
    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    /// A stream's outbox and what was queued on it until it was finished.
    func stream() -> (AsyncStream<Fedgate_V1_BrokerMessage>.Continuation, () async -> [Fedgate_V1_BrokerMessage]) {
        let (messages, outbox) = AsyncStream.makeStream(of: Fedgate_V1_BrokerMessage.self)
        return (outbox, { await messages.reduce(into: []) { $0.append($1) } })
    }

    @Test("a second stream from a silo replaces the first (its outbox ends); the first's late close is ignored, the current one's closes")
    func replaceAndClose() async {
        var sessions = GatewaySessions(heartbeatInterval: .milliseconds(250), silentAfter: .seconds(5), at: at(0))
        let (first, firstMessages) = stream(), (second, _) = stream()
        let one = sessions.open("hospital-a", datasets: ["d"], certificateNotAfter: nil, outbox: first, at: at(0))
        #expect(one.replaced == nil)
        let two = sessions.open("hospital-a", datasets: ["d"], certificateNotAfter: nil, outbox: second, at: at(10))
        #expect(two.token > one.token && two.replaced?.token == one.token)
        #expect(await firstMessages().isEmpty, "the replaced stream's outbox was finished")
        #expect(!sessions.close("hospital-a", token: one.token) && sessions.connected == ["hospital-a"], "a stale close changes nothing")
        #expect(sessions.isCurrent("hospital-a", token: two.token))
        #expect(sessions.close("hospital-a", token: two.token) && sessions.count == 0)
    }

    @Test("messages reach the connected silos serving a plan's data sets, and nobody else")
    func sendAndServe() async {
        var sessions = GatewaySessions(heartbeatInterval: .milliseconds(250), silentAfter: .seconds(5), at: at(0))
        let (a, aMessages) = stream(), (b, bMessages) = stream()
        _ = sessions.open("a", datasets: ["cancer", "cardio"], certificateNotAfter: Date(timeIntervalSince1970: 9), outbox: a, at: at(0))
        _ = sessions.open("b", datasets: ["cancer"], certificateNotAfter: nil, outbox: b, at: at(0))
        #expect(sessions.serving(["cancer"]) == ["a", "b"] && sessions.serving(["cancer", "cardio"]) == ["a"] && sessions.serving(["x"]).isEmpty)
        #expect(sessions.certificateNotAfter(of: "a") == Date(timeIntervalSince1970: 9))
        var message = Fedgate_V1_BrokerMessage()
        message.welcome.brokerID = "broker"
        sessions.send(message, to: ["a", "nobody"])
        sessions.closeAll()
        let toA = await aMessages(), toB = await bMessages()
        #expect(toA.map(\.welcome.brokerID) == ["broker"] && toB.isEmpty)
        #expect(sessions.connected.isEmpty)
    }

    @Test("a silo heard on its current stream or by a transfer stays; one heard only on a replaced stream goes silent")
    func silence() {
        var sessions = GatewaySessions(heartbeatInterval: .milliseconds(250), silentAfter: .seconds(2), at: at(0))
        let (a, _) = stream(), (b, _) = stream(), (c, _) = stream()
        _ = sessions.open("a", datasets: [], certificateNotAfter: nil, outbox: a, at: at(0))
        let stale = sessions.open("b", datasets: [], certificateNotAfter: nil, outbox: b, at: at(0)).token
        let current = sessions.open("b", datasets: [], certificateNotAfter: nil, outbox: c, at: at(0)).token
        var silent: [String] = []
        for t in stride(from: 250, through: 3000, by: 250) {
            sessions.heard(from: "a", at: at(t))                     // a transfer of a's
            sessions.heard(from: "b", token: stale, at: at(t))       // a replaced stream's heartbeat
            silent += sessions.silent(at: at(t)).map { "\($0.silo)#\($0.token == current ? "current" : "other")" }
        }
        #expect(silent == ["b#current"], "\(silent)")
    }
}
