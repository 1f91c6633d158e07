import FedGatePolicy
@testable import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// Software pins over mutual TLS: a broker that serves only pinned gateway versions, a silo whose
/// policy pins the broker's build. A mismatch names both sides' software, is audited where it was
/// decided, and stops the gateway instead of retrying for ever.
@Suite("Version pinning between gateways and the broker")
struct VersionPinTests {
    /// Runs one gateway (hospital-a, breast-cancer data) with `brokerPins` against a broker with `gatewayPins`.
    func run(gatewayPins: VersionPins, brokerPins: VersionPins,
             _ check: @escaping @Sendable (BrokerHandle, Gateway, SQLiteLedger, SQLiteLedger) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        var settings = BrokerCoordinator.Settings()
        settings.gatewayPins = gatewayPins
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore, settings: settings,
                                   logger: consortium.logger) { broker in
            let store = try await consortium.store("hospital-a")
            let text = Fixtures.policy(silo: "hospital-a")
            let governor = SiloGovernor(policy: try SiloPolicy.parse(text, file: "hospital-a.yaml"), policyText: text, ledger: PrivacyLedger(backend: store))
            var gatewaySettings = Gateway.Settings(credentials: try await consortium.enrolledSilo("hospital-a", in: brokerStore), dataset: "breast-cancer-2024",
                                                   train: Fixtures.data, test: Fixtures.data)
            gatewaySettings.brokerPort = broker.port
            gatewaySettings.brokerPins = brokerPins
            let gateway = Gateway(settings: gatewaySettings, governor: governor, logger: consortium.logger)
            try await check(broker, gateway, brokerStore, store)
        }
    }

    @Test("a gateway of an unpinned version is refused at its hello with both versions, audited by the broker, and stops")
    func brokerRefusesGateway() async throws {
        try await run(gatewayPins: VersionPins(versions: ["fedgate 9.9.9"]), brokerPins: .any) { broker, gateway, brokerStore, _ in
            await gateway.run()  // returns: the gateway gave up instead of retrying
            let stopped = try #require(await gateway.stopped)
            #expect("\(stopped)".contains("fedgate \(FedGateVersion.current)") && "\(stopped)".contains("fedgate 9.9.9"), "\(stopped)")
            #expect(await broker.coordinator.connectedSilos.isEmpty)
            let refusal = try #require(try await brokerStore.auditRecords().last { $0.action == "connection.refuse" })
            #expect(refusal.actor == "hospital-a" && refusal.payload.contains("fedgate 9.9.9"))
        }
    }

    @Test("a silo whose policy pins another broker build refuses the broker at its welcome, audits it in its own trail, and stops")
    func siloRefusesBroker() async throws {
        try await run(gatewayPins: .any, brokerPins: VersionPins(sha256: [String(repeating: "ab", count: 32)])) { _, gateway, _, siloStore in
            await gateway.run()
            let stopped = try #require(await gateway.stopped)
            #expect("\(stopped)".contains("not one of the 1 pinned builds"), "\(stopped)")
            let refusal = try #require(try await siloStore.auditRecords().last { $0.action == "connection.refuse" })
            #expect(refusal.subject.hasPrefix("broker 127.0.0.1:"))
        }
    }

    @Test("pins that name the running build on both sides let the gateway in")
    func pinnedBuildConnects() async throws {
        let running = SoftwareIdentity.running
        #expect(running.sha256.count == 64, "the executable's hash was read")
        try await run(gatewayPins: VersionPins(versions: [running.version], sha256: [running.sha256]),
                      brokerPins: VersionPins(versions: [running.version], sha256: [running.sha256])) { broker, gateway, _, _ in
            let task = Task { await gateway.run() }
            defer { task.cancel() }
            await eventually { await broker.coordinator.connectedSilos == ["hospital-a"] }
            #expect(await gateway.stopped == nil)
        }
    }

    @Test("the pins' words: both versions, and the fix", arguments: [
        (VersionPins(versions: ["fedgate 0.3.0"]), "runs fedgate 0.2.0; this side (fedgate 0.3.0) accepts only fedgate 0.3.0"),
        (VersionPins(sha256: [String(repeating: "0", count: 64)]), "not one of the 1 pinned builds"),
    ])
    func words(_ pins: VersionPins, _ expected: String) {
        let reason = pins.refusal(of: SoftwareIdentity(version: "fedgate 0.2.0", sha256: "ff"), who: "gateway a", ours: SoftwareIdentity(version: "fedgate 0.3.0", sha256: ""))
        #expect(reason?.contains(expected) == true, "\(reason ?? "accepted")")
        #expect(VersionPins.any.refusal(of: SoftwareIdentity(version: "x", sha256: ""), who: "y", ours: .running) == nil)
    }
}
