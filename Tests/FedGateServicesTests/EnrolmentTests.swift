import FedGatePKI
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Testing
@testable import FedGateConsortiumTesting

@Suite("Enrolment with a one-time token")
struct EnrolmentTests {
    @Test("a silo enrols with its token on the enrolment port, then connects with its new certificate; the token works once and is never logged")
    func enrolOnce() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let token = Enrolment.newToken()
        try await store.invite(EnrolmentInvitation(silo: "clinic-c", region: "eu-west", jurisdiction: "EU", tokenSHA256: Enrolment.hash(token),
                                                   createdAt: Date(), expiresAt: Date().addingTimeInterval(3600)), actor: "admin")
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store,
                                   issuer: CertificateIssuer(authority: consortium.ca, days: 7), enrolmentPort: 0,
                                   logger: Logger(label: "fedgate.broker.enrolment") { _ in RecordingLogHandler() }) { broker in
            let port = try #require(broker.enrolmentPort)
            let identity = try Identity(id: "clinic-c", role: .silo, region: "eu-west")
            let ca = try consortium.ca.certificatePEM
            let credentials = try await Enrolment.enroll(identity: identity, token: token, host: "127.0.0.1", port: port, brokerName: "broker", caPEM: ca)
            #expect(credentials.identity == identity)
            #expect(try await store.party("clinic-c")?.jurisdiction == "EU")

            // The new certificate opens the main port.
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: credentials)
            let me = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
            #expect(me.id == "clinic-c")

            @Sendable func attempt(_ id: String, _ token: String) async throws {
                _ = try await Enrolment.enroll(identity: try Identity(id: id, role: .silo, region: "eu-west"), token: token,
                                               host: "127.0.0.1", port: port, brokerName: "broker", caPEM: ca)
            }
            func refusal(_ id: String, _ token: String) async -> String {
                do { try await attempt(id, token) } catch { return "\(error)" }
                return "enrolled"
            }
            #expect(await refusal("clinic-c", token).contains("already used"))
            #expect(await refusal("clinic-c", Enrolment.newToken()).contains("not valid"))
            let actions = try await store.auditRecords().map(\.action)
            #expect(actions.filter { $0 == "enrolment.redeem" }.count == 1)
            #expect(actions.filter { $0 == "enrolment.refuse" }.count == 2)
            #expect(try await store.auditRecords().allSatisfy { !$0.payload.contains(token) }, "the token is never stored or audited")
            let logged = RecordingLogHandler.lines.withLock { $0 }
            #expect(logged.contains { $0.contains("clinic-c") }, "the broker logged the enrolment (at trace level)")
            #expect(!logged.contains { $0.contains(token) || $0.contains(String(token.prefix(16))) }, "the token is never logged")

            // The enrolment port serves nothing else: the broker's RPCs are not there.
            let open = try FedGateTransports.enrolmentClient(host: "127.0.0.1", port: port, serverName: "broker", caPEM: ca)
            let code: RPCError.Code? = await {
                do { _ = try await withGRPCClient(transport: open) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }; return nil }
                catch let e as RPCError { return e.code } catch { return .unknown }
            }()
            #expect(code == .unimplemented)
        }
    }
}
