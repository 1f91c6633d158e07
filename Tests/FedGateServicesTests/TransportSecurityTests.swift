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

/// Who gets in, over real TLS on loopback: the broker's listener with its connection guard and
/// per-call authorisation, against gRPC clients and `openssl s_client` as independent peers.
@Suite("Broker transport security over mutual TLS")
struct TransportSecurityTests {
    /// Runs a broker with a fresh consortium and store; `body` gets both, and the refusals audited.
    func withBroker(limits: TransportLimits = .init(), _ body: @escaping @Sendable (Consortium, BrokerHandle, SQLiteLedger) async throws -> Void) async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let credentials = try consortium.credentials("broker", .broker)
        try await BrokerHost.serve(port: 0, credentials: credentials, store: store, limits: limits, logger: consortium.logger) { broker in
            try await body(consortium, broker, store)
        }
    }

    func call<R: Sendable>(_ broker: BrokerHandle, as credentials: TLSCredentials,
                           _ body: @Sendable (Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
        let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: credentials)
        return try await withGRPCClient(transport: transport) { client in try await body(Fedgate_V1_Broker.Client(wrapping: client)) }
    }

    func rpcCode(_ body: () async throws -> Void) async -> RPCError.Code? {
        do { try await body(); return nil } catch let error as RPCError { return error.code } catch { return .unknown }
    }

    @Test("identity comes from the certificate: WhoAmI names the silo, its role and region")
    func whoAmI() async throws {
        try await withBroker { consortium, broker, store in
            let silo = try await consortium.enrolledSilo("hospital-a", in: store, region: "eu-west")
            let me = try await call(broker, as: silo) { try await $0.whoAmI(Fedgate_V1_WhoAmIRequest()) }
            #expect(me.id == "hospital-a" && me.role == "silo" && me.region == "eu-west")
            #expect(abs(Double(me.certificateNotAfterMs) / 1000 - silo.notAfter.timeIntervalSince1970) < 1)
            let person = try consortium.credentials("dana", .dataScientist)
            let who = try await call(broker, as: person) { try await $0.whoAmI(Fedgate_V1_WhoAmIRequest()) }
            #expect(who.id == "dana" && who.role == "data-scientist" && who.region.isEmpty)
        }
    }

    @Test("a broker certificate issued with its real host name is checked against the name a client dials; another name is refused")
    func hostNames() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("broker")
        let request = try EnrollmentRequest(identity: try Identity(id: "broker", role: .broker, region: "eu-west"))
        // A host name only: an IP address among the names would match any connection to that
        // address, whatever name the client dialled (swift-nio-ssl checks both).
        let certificate = try consortium.ca.issue(request.csr, days: 7, alternativeNames: ["broker.consortium.example"])
        let credentials = try TLSCredentials(certificatePEM: try certificate.serializeAsPEM().pemString, keyPEM: request.keyPEM,
                                             caPEM: try consortium.ca.certificatePEM)
        #expect(credentials.identity.id == "broker", "the identity is the subject's, whatever other names the certificate carries")
        try await BrokerHost.serve(port: 0, credentials: credentials, store: store, logger: consortium.logger) { broker in
            let dana = try consortium.credentials("dana", .dataScientist)
            func whoAmI(dialling name: String) async -> String? {
                guard let transport = try? FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: name, credentials: dana,
                                                                    requestTimeout: .seconds(20)) else { return nil }
                return try? await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(.init()).id }
            }
            #expect(await whoAmI(dialling: "broker.consortium.example") == "dana")
            #expect(await whoAmI(dialling: "broker") == "dana")
            #expect(await whoAmI(dialling: "elsewhere.example") == nil, "a name the certificate does not carry is refused")
        }
    }

    @Test("no client certificate, another CA's certificate, an expired one: refused at the handshake and audited")
    func handshakeRefusals() async throws {
        try await withBroker { consortium, broker, store in
            // No certificate at all.
            let bare = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: broker.port),
                transportSecurity: .tls { $0.trustRoots = .certificates([.bytes(Array(try! consortium.ca.certificatePEM.utf8), format: .pem)]) },
                config: .defaults { $0.http2.authority = "broker"; $0.backoff.initial = .milliseconds(50) })
            let noCert = await rpcCode {
                _ = try await withGRPCClient(transport: bare) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
            }
            #expect(noCert == .unavailable)

            let otherCA = try ConsortiumCA.create(name: "Some other CA")
            let foreign = try consortium.credentials("mallory", .silo, issuer: otherCA)
            #expect(await rpcCode { _ = try await call(broker, as: foreign) { try await $0.whoAmI(Fedgate_V1_WhoAmIRequest()) } } == .unavailable)

            let expired = try consortium.credentials("hospital-old", .silo, days: 1, now: Date().addingTimeInterval(-3 * 86_400))
            #expect(await rpcCode { _ = try await call(broker, as: expired) { try await $0.whoAmI(Fedgate_V1_WhoAmIRequest()) } } == .unavailable)

            // Each attempt left an audit record naming why (written asynchronously).
            try await eventually { try await store.auditRecords().filter { $0.action == "connection.refuse" }.count >= 3 }
            let refusals = try await store.auditRecords().filter { $0.action == "connection.refuse" }.map(\.payload)
            #expect(refusals.contains { $0.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") }, "\(refusals)")
            #expect(refusals.contains { $0.contains("claiming 'mallory'") }, "\(refusals)")
            #expect(refusals.contains { $0.contains("claiming 'hospital-old'") && $0.lowercased().contains("expired") }, "\(refusals)")
            // One record per handshake (the gRPC client may retry a refused handshake once before the
            // call fails), and nothing else refused.
            #expect(refusals.allSatisfy { $0.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || $0.contains("claiming 'mallory'")
                || $0.contains("claiming 'hospital-old'") }, "one record per handshake: \(refusals)")
        }
    }

    @Test("openssl s_client: TLS 1.2 is refused, TLS 1.3 with a silo certificate is admitted, no certificate is refused")
    func opensslPeers() async throws {
        try await withBroker { consortium, broker, store in
            _ = try consortium.credentials("hospital-a", .silo)
            let cert = ["-cert", consortium.file("hospital-a.pem").path, "-key", consortium.file("hospital-a.key").path,
                        "-CAfile", consortium.file("ca.pem").path]
            let old = try opensslClient(port: broker.port, arguments: ["-tls1_2"] + cert)
            #expect(old.contains("TLSv1.2"), "\(old)")
            let admittedBefore = broker.connectionGuard.admittedTotal
            let guardian = broker.connectionGuard
            let modern = try opensslClient(port: broker.port, arguments: ["-tls1_3"] + cert) { guardian.admittedTotal > admittedBefore }
            #expect(modern.contains("TLSv1.3"), "\(modern)")
            #expect(broker.connectionGuard.admittedTotal == admittedBefore + 1, "the TLS 1.3 peer with a good certificate was admitted")
            _ = try opensslClient(port: broker.port, arguments: ["-tls1_3", "-CAfile", consortium.file("ca.pem").path])
            try await eventually { try await store.auditRecords().filter { $0.action == "connection.refuse" }.count >= 2 }
            try await Task.sleep(for: .milliseconds(200))  // a wrongly refused third peer would show up too
            let refusals = try await store.auditRecords().filter { $0.action == "connection.refuse" }
            #expect(refusals.contains { $0.payload.contains("TLS 1.3 is required") && $0.subject == "hospital-a" } == false,
                    "a TLS 1.2 refusal is decided before the identity is read")
            #expect(refusals.contains { $0.payload.contains("TLS 1.3 is required") }, "\(refusals.map(\.payload))")
            #expect(refusals.contains { $0.payload.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") }, "\(refusals.map(\.payload))")
            #expect(refusals.count == 2, "the TLS 1.3 peer with a good certificate was admitted: \(refusals.map(\.payload))")
        }
    }

    @Test("each role calls only what it may: silos cannot submit plans or read the audit; people cannot open task streams")
    func authorisation() async throws {
        try await withBroker { consortium, broker, store in
            let silo = try await consortium.enrolledSilo("hospital-a", in: store)
            let scientist = try consortium.credentials("dana", .dataScientist)
            let officer = try consortium.credentials("olga", .complianceOfficer)
            let plan = { var p = Fedgate_V1_SubmitPlanRequest(); p.planYaml = "purpose: research"; return p }()
            #expect(await rpcCode { _ = try await call(broker, as: silo) { try await $0.submitPlan(plan) } } == .permissionDenied)
            #expect(await rpcCode {
                try await call(broker, as: silo) { try await $0.readAudit(Fedgate_V1_ReadAuditRequest()) { for try await _ in $0.messages {} } }
            } == .permissionDenied)
            #expect(await rpcCode {
                try await call(broker, as: scientist) { client in
                    try await client.connect(request: StreamingClientRequest { _ in }) { for try await _ in $0.messages {} }
                }
            } == .permissionDenied)
            #expect(await rpcCode {
                try await call(broker, as: scientist) { client in
                    _ = try await client.uploadUpdate(request: StreamingClientRequest { _ in })
                }
            } == .permissionDenied)
            // A data scientist may submit: a malformed plan is refused for its content, not its sender.
            #expect(await rpcCode { _ = try await call(broker, as: scientist) { try await $0.submitPlan(plan) } } == .invalidArgument)
            // The compliance officer reads the audit, which holds the refusals above.
            let actions = try await call(broker, as: officer) { client in
                try await client.readAudit(Fedgate_V1_ReadAuditRequest()) { response in
                    var seen: [String] = []
                    for try await record in response.messages { seen.append(record.action + " " + record.detailJson) }
                    return seen
                }
            }
            #expect(actions.filter { $0.hasPrefix("call.refuse") }.count == 4, "\(actions)")
            #expect(actions.contains { $0.contains("SubmitPlan") && $0.contains("only data-scientist may") })
            _ = store
        }
    }

    @Test("a silo uploads only to a round it joined: an update with no open round, or a transfer that fails its checksum, is refused and audited once")
    func uploadOutsideRound() async throws {
        try await withBroker { consortium, broker, store in
            let silo = try await consortium.enrolledSilo("hospital-b", in: store)
            /// Four bytes for someone else's plan, with the checksum of `claimed`.
            func upload(checksumOf claimed: [UInt8]) async throws -> Fedgate_V1_UploadReceipt {
                try await call(broker, as: silo) { client in
                    try await client.uploadUpdate(request: StreamingClientRequest { writer in
                        var chunk = Fedgate_V1_TransferChunk()
                        chunk.header.planHash = "someone-elses-plan"
                        chunk.header.round = 1
                        chunk.header.totalBytes = 4
                        chunk.data = Data([1, 2, 3, 4])
                        chunk.sha256 = TransferDigest.hex(claimed)
                        try await writer.write(chunk)
                    })
                }
            }
            let receipt = try await upload(checksumOf: [1, 2, 3, 4])
            #expect(!receipt.accepted)
            #expect(receipt.reason.contains("not taking updates"))
            // A transfer whose bytes do not match its checksum is refused before anyone reads it.
            let damaged = try await upload(checksumOf: [1, 2, 3, 5])
            #expect(!damaged.accepted && !damaged.reason.isEmpty)
            // One record for each refusal: what arrived and was refused, and the transfer that failed.
            let audit = try await store.auditRecords().filter { $0.action == "update.reject" || $0.action == "update.refuse" }
            #expect(audit.map(\.action) == ["update.reject", "update.refuse"] && audit.allSatisfy { $0.subject == "hospital-b" },
                    "\(audit.map { "\($0.action) \($0.payload)" })")
        }
    }

    @Test("a revoked gateway is told why and stops after a few refused handshakes, instead of retrying for ever")
    func revokedGatewayStops() async throws {
        try await withBroker { consortium, broker, store in
            let shard = try Fixtures.simulation(seed: 8).shards()[0]
            let silo = try await NetworkedRoundTests().makeSilo(consortium, "hospital-r", train: shard.train, test: shard.test, broker: store,
                                                               port: broker.port) { settings in
                settings.refusedCertificatePatience = .zero
                settings.reconnectMaximum = .milliseconds(400)
            }
            let running = Task { await silo.gateway.run() }
            defer { running.cancel() }
            #expect(await eventually { await broker.coordinator.connectedSilos == ["hospital-r"] })
            try await store.revoke(party: "hospital-r", at: Date(), actor: "operator")
            // The broker closes its stream; every handshake after is refused; the gateway gives up.
            await running.value
            let stopped = try #require(await silo.gateway.stopped, "the gateway stopped without saying why")
            let notAfter = await silo.gateway.credentials.notAfter
            #expect(stopped == .certificateRefused(silo: "hospital-r", notAfter: notAfter, attempts: 3))
            #expect("\(stopped)".contains("revoked") && "\(stopped)".contains("Ask the operator"))
        }
    }

    @Test("revoking a silo closes its open connections at once and refuses its next handshake")
    func revocation() async throws {
        try await withBroker { consortium, broker, store in
            let silo = try await consortium.enrolledSilo("hospital-c", in: store)
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: broker.port, serverName: "broker", credentials: silo)
            let code = await rpcCode {
                try await withGRPCClient(transport: transport) { grpc in
                    let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                    try await client.connect(request: StreamingClientRequest { writer in
                        var hello = Fedgate_V1_GatewayMessage()
                        hello.hello.datasets = ["breast-cancer-2024"]
                        try await writer.write(hello)
                        try await Task.sleep(for: .seconds(30))
                    }) { response in
                        for try await message in response.messages {
                            if case .welcome? = message.kind {
                                #expect(broker.connectionGuard.openConnections(of: "hospital-c") == 1)
                                try await broker.revoke("hospital-c", store: store, actor: "admin")
                            }
                        }
                    }
                }
            }
            #expect(code == .unavailable || code == .cancelled || code == .unknown, "the stream was cut: \(String(describing: code))")
            #expect(broker.connectionGuard.openConnections(of: "hospital-c") == 0)
            #expect(await rpcCode { _ = try await call(broker, as: silo) { try await $0.whoAmI(Fedgate_V1_WhoAmIRequest()) } } == .unavailable)
            let refused = try await store.auditRecords().filter { $0.action == "connection.refuse" }
            #expect(refused.contains { $0.payload.contains("revoked") }, "\(refused.map(\.payload))")
        }
    }

    @Test("a connection that never completes its TLS handshake is closed at the handshake timeout and audited; silent or half a hello alike")
    func stalledHandshakes() async throws {
        var limits = TransportLimits()
        limits.handshakeTimeout = .seconds(1)
        // Both refusals come from 127.0.0.1 with the same reason: under the default 60 s throttle the
        // second is held back and written only when the first's minute ends, which on a loaded machine
        // came after this test stopped waiting. With a 1 s interval each is written when it happens.
        limits.refusalInterval = .seconds(1)
        try await withBroker(limits: limits) { _, broker, store in
            // One peer says nothing; the other sends the first bytes of a TLS record and stops.
            for opening in [[UInt8](), [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]] {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                address.sin_port = UInt16(broker.port).bigEndian
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
                }
                try #require(connected)
                if !opening.isEmpty { _ = opening.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
                let opened = ContinuousClock.now
                // The broker closes it: a read returns end-of-file (or a reset), not more waiting. The
                // ceiling is generous: on a loaded CI machine the 1 s timer once fired after more than 8 s.
                var closedAfter: Duration?
                while closedAfter == nil, ContinuousClock.now - opened < .seconds(60) {
                    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    if poll(&poller, 1, 0) > 0 {
                        var byte: UInt8 = 0
                        if recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0 { closedAfter = ContinuousClock.now - opened }
                    } else {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                let after = try #require(closedAfter, "the broker kept a connection with no finished handshake for 60 s")
                #expect(after >= .milliseconds(900), "closed before the timeout: \(after)")
            }
            try await eventually {
                try await store.auditRecords().filter { $0.action == "connection.refuse" && $0.payload.contains("handshake not completed within 1.0 s") }.count >= 2
            }
            let refused = try await store.auditRecords().filter { $0.action == "connection.refuse" }.map(\.payload)
            #expect(refused.filter { $0.contains("TLS handshake not completed within 1.0 s") }.count == 2, "\(refused)")
        }
    }
}
