import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Testing
@testable import FedGateConsortiumTesting

/// New connections per address, limited before any TLS work: the token bucket on its own (a given
/// clock), and the broker closing the connections of an address over its rate, audited.
@Suite("Handshake rate limits")
struct HandshakeRateTests {
    @Test("an address gets its burst at once, then its rate; other addresses are not affected")
    func bucket() {
        var limit = HandshakeRateLimit(perSecond: 2, burst: 3)
        let t0 = ContinuousClock.now
        var burst: [Bool] = []
        for _ in 0..<5 { burst.append(limit.admit("10.0.0.1", at: t0)) }
        #expect(burst == [true, true, true, false, false])
        let other = limit.admit("10.0.0.2", at: t0)
        #expect(other, "another address has its own bucket")
        let early = limit.admit("10.0.0.1", at: t0 + .milliseconds(400))
        #expect(!early, "0.8 of a token after 0.4 s")
        let later = limit.admit("10.0.0.1", at: t0 + .milliseconds(600))
        #expect(later, "a token after 0.5 s")
        var refilled: [Bool] = []
        for _ in 0..<4 { refilled.append(limit.admit("10.0.0.1", at: t0 + .seconds(60))) }
        #expect(refilled == [true, true, true, false], "refilled to the burst, no more")
        #expect(HandshakeRateLimit.unlimited.perSecond.isInfinite)
    }

    @Test("the addresses remembered stay bounded: quiet ones are forgotten first")
    func boundedSources() {
        var limit = HandshakeRateLimit(perSecond: 1, burst: 2, maximumSources: 100)
        let t0 = ContinuousClock.now
        for i in 0..<1_000 { _ = limit.admit("10.0.\(i / 256).\(i % 256)", at: t0 + .seconds(i)) }
        #expect(limit.trackedSources <= 100)
        // A source that spent its burst just now is still limited.
        _ = limit.admit("192.0.2.1", at: t0 + .seconds(1_000)); _ = limit.admit("192.0.2.1", at: t0 + .seconds(1_000))
        let third = limit.admit("192.0.2.1", at: t0 + .seconds(1_000))
        #expect(!third)
    }

    @Test("over its burst an address's connections are closed before the handshake; the broker records the first at once and counts the rest into the interval's next record")
    func brokerLimits() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        var limits = TransportLimits()
        limits.handshakeBurst = 3
        limits.handshakesPerSecond = 0.01
        limits.refusalInterval = .seconds(60)
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store, limits: limits,
                                   logger: consortium.logger) { broker in
            let silo = try await consortium.enrolledSilo("hospital-a", in: store)
            var outcomes: [Bool] = []
            for attempt in 0..<5 {
                // A refused connection is retried by the client until the call's deadline: keep the refused ones' short.
                let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: silo,
                                                             requestTimeout: .seconds(attempt < 3 ? 30 : 2))
                do {
                    _ = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
                    outcomes.append(true)
                } catch { outcomes.append(false) }
            }
            #expect(outcomes == [true, true, true, false, false], "\(outcomes)")
            await eventually(seconds: 10) {
                (try? await store.auditRecords().contains { $0.action == "connection.refuse" && $0.payload.contains("too many new connections") }) == true
            }
            let refusals = try await store.auditRecords().filter { $0.payload.contains("too many new connections") }
            #expect(refusals.count == 1, "one record now; the others of the interval are counted into the next: \(refusals.map(\.payload))")
        }
    }
}
