import Crypto
import FedGatePKI
import FedGateProto
@testable import FedGateServices
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Testing
import X509
@testable import FedGateConsortiumTesting

@Suite("Enrolment with a one-time token")
struct EnrolmentTests {
    @Test("a token is fgt_ and 256 random bits in base64url: it never begins like a command-line option, and no two are alike")
    func tokenShape() throws {
        let tokens = (0..<2000).map { _ in Enrolment.newToken() }
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for token in tokens {
            #expect(token.hasPrefix(Enrolment.tokenPrefix) && !token.hasPrefix("-"))
            let body = token.dropFirst(Enrolment.tokenPrefix.count)
            #expect(body.count == 43 && body.allSatisfy(alphabet.contains), "\(token)")
        }
        #expect(Set(tokens).count == tokens.count)
        // Without the prefix, about 2000/64 of these would have begun with '-' (the walkthrough once failed so).
        #expect(tokens.contains { $0.dropFirst(Enrolment.tokenPrefix.count).hasPrefix("-") })
    }

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

/// The root's key stays offline: the broker issues with an intermediate CA (`fedgate ca
/// intermediate`), and every party still trusts only the root.
@Suite("Enrolment and renewal by a broker holding an intermediate CA")
struct IntermediateIssuingTests {
    @Test("a silo enrolled by an intermediate gets its certificate with the chain, opens the main port with it, renews, and binds secure-aggregation keys its peers accept")
    func intermediateIssues() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let issuing = try consortium.ca.intermediate(name: "broker issuing CA", days: 30)
        let token = Enrolment.newToken()
        try await store.invite(EnrolmentInvitation(silo: "clinic-c", region: "eu-west", jurisdiction: "EU", tokenSHA256: Enrolment.hash(token),
                                                   createdAt: Date(), expiresAt: Date().addingTimeInterval(3600)), actor: "admin")
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store,
                                   issuer: CertificateIssuer(authority: issuing, days: 7), enrolmentPort: 0, logger: consortium.logger) { broker in
            let root = try consortium.ca.certificatePEM
            let credentials = try await Enrolment.enroll(identity: try Identity(id: "clinic-c", role: .silo, region: "eu-west"), token: token,
                                                         host: "127.0.0.1", port: try #require(broker.enrolmentPort), brokerName: "broker", caPEM: root)
            let chain = try Certificate.chain(pemEncoded: credentials.certificatePEM)
            #expect(chain.count == 2 && chain[1] == issuing.certificate, "the certificate arrives with the intermediate after it")
            #expect(try await store.party("clinic-c")?.certificateSHA256 == chain[0].sha256Fingerprint)

            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: credentials)
            let renewed = try await withGRPCClient(transport: transport) { client in
                let broker = Fedgate_V1_Broker.Client(wrapping: client)
                #expect(try await broker.whoAmI(Fedgate_V1_WhoAmIRequest()).id == "clinic-c")
                let request = try EnrollmentRequest(identity: credentials.identity)
                var renew = Fedgate_V1_RenewRequest()
                renew.csrPem = try request.csrPEM
                return try TLSCredentials(certificatePEM: try await broker.renew(renew).certificatePem, keyPEM: request.keyPEM, caPEM: root)
            }
            #expect(try Certificate.chain(pemEncoded: renewed.certificatePEM).count == 2)
            let again = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: renewed)
            let me = try await withGRPCClient(transport: again) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
            #expect(me.id == "clinic-c", "the renewed, chained certificate opens the main port too")

            // A peer checks this silo's secure-aggregation binding against the root alone.
            let identityKey = Curve25519.Signing.PrivateKey()
            let binding = try SecAggBinding(id: 9, identityKey: identityKey, credentials: renewed)
            #expect(try await binding.verified(id: 9, ca: consortium.ca.certificate).rawRepresentation == identityKey.publicKey.rawRepresentation)
        }
    }

    @Test("a certificate from another consortium's intermediate is refused at the handshake")
    func foreignIntermediate() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let rogue = try ConsortiumCA.create(name: "rogue CA").intermediate(name: "rogue issuing CA", days: 30)
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store, logger: consortium.logger) { broker in
            let forged = try consortium.credentials("clinic-c", .silo, issuer: rogue)
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: forged)
            await #expect(throws: (any Error).self) {
                _ = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
            }
        }
    }
}
