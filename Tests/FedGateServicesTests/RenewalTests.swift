import FedGatePKI
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Testing
@testable import FedGateConsortiumTesting
import X509

@Suite("Certificate renewal over mutual TLS")
struct RenewalTests {
    @Test("a gateway near expiry renews from the broker and reconnects with the new certificate, without a restart")
    func gatewayRenews() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let issuer = CertificateIssuer(authority: consortium.ca, days: 7)
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store, issuer: issuer,
                                   logger: consortium.logger) { broker in
            let shards = try Fixtures.simulation(seed: 5).shards()
            // A certificate with a day left; the gateway renews when fewer than two remain.
            let short = try consortium.credentials("hospital-0", .silo, days: 1)
            let silo = try await NetworkedRoundTests().makeSilo(consortium, "hospital-0", train: shards[0].train, test: shards[0].test,
                                                                 broker: store, port: broker.port) { settings in
                settings.credentials = short
                settings.renewBefore = .seconds(2 * 86_400)
                settings.certificateFile = consortium.file("hospital-0.pem")
                settings.keyFile = consortium.file("hospital-0.key")
            }
            let gateway = silo.gateway
            let running = Task { await gateway.run() }
            defer { running.cancel() }

            var seen: Date?
            await eventually {
                seen = await broker.coordinator.certificateNotAfter(of: "hospital-0")
                return seen.map { $0 > Date().addingTimeInterval(6 * 86_400) } ?? false
            }
            #expect(seen.map { $0 > Date().addingTimeInterval(6 * 86_400) } == true, "the broker sees the renewed certificate: \(String(describing: seen))")
            // On disk: the new certificate, and its key readable by the owner only.
            let onDisk = try Certificate(pemEncoded: try String(contentsOf: consortium.file("hospital-0.pem"), encoding: .utf8))
            #expect(onDisk.notValidAfter > Date().addingTimeInterval(6 * 86_400))
            let mode = try FileManager.default.attributesOfItem(atPath: consortium.file("hospital-0.key").path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            #expect(await gateway.credentials.notAfter == onDisk.notValidAfter)
            #expect(try await store.auditRecords().contains { $0.action == "certificate.renew" && $0.subject == "hospital-0" })
        }
    }

    @Test("a party renews only its own identity: a CSR for another silo is refused")
    func renewOnlyYourself() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store,
                                   issuer: CertificateIssuer(authority: consortium.ca, days: 7), logger: consortium.logger) { broker in
            let a = try await consortium.enrolledSilo("hospital-a", in: store)
            let forB = try EnrollmentRequest(identity: try Identity(id: "hospital-b", role: .silo, region: "eu-west"))
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: a)
            var request = Fedgate_V1_RenewRequest()
            request.csrPem = try forB.csrPEM
            let outcome: RPCError.Code? = await {
                do { _ = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).renew(request) }; return nil }
                catch let e as RPCError { return e.code } catch { return .unknown }
            }()
            #expect(outcome == .permissionDenied)
            #expect(try await store.auditRecords().filter { $0.action == "certificate.renew" }.isEmpty)
        }
    }
}
