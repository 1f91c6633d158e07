import FedGatePKI
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import ServiceLifecycle

/// A running broker: its listener, coordinator and connection guard.
public struct BrokerHandle: Sendable {
    public let port: Int
    /// The enrolment listener's port, when the broker enrols silos by token.
    public let enrolmentPort: Int?
    public let coordinator: BrokerCoordinator
    public let connectionGuard: ConnectionGuard

    /// Revokes an identity (a silo or a person): recorded in the store, refused from the next
    /// handshake on, and its open connections closed now.
    public func revoke(_ id: String, store: any PartyRegistry, actor: String, reason: String = "revoked by the operator") async throws {
        try await store.revoke(Revocation(kind: .identity, value: id, reason: reason, revokedAt: Date()), actor: actor)
        connectionGuard.revoke(id)
    }
}

/// Leadership among brokers that share one store: only the holder of the lease listens and runs
/// plans; the others stand by and take over when it lapses.
public struct BrokerLeaseSettings: Sendable {
    public var name = "broker"
    /// This broker process's name in the lease: a restart under the same name takes its lease back
    /// at once (with a new term); another name waits for it to lapse.
    public var holder: String
    /// How long a lease lasts without renewal (renewed every third of it).
    public var duration: Duration = .seconds(10)
    /// Called the moment the lease is found lost, before anything else: a process serving a
    /// consortium should stop at once here (fail-stop), not drain connections as a stale leader.
    public var onLost: (@Sendable (LeaseLost) -> Void)?
    public init(holder: String) { self.holder = holder }
}

/// This broker's lease was taken by another or could not be renewed in time: it stops serving.
public struct LeaseLost: Error, CustomStringConvertible {
    public let description: String
}

public enum BrokerHost {
    /// Waits until this broker holds the lease (at once when it is free, expired or already ours).
    static func lead(_ lease: BrokerLeaseSettings, store: any BrokerStore, logger: Logger) async throws -> BrokerLease {
        var said = false
        while true {
            try Task.checkCancellation()
            await fenceLapsedHolder(lease, store: store, logger: logger)
            do {
                if let held = try await store.claimLease(lease.name, holder: lease.holder, duration: lease.duration.seconds, now: Date(), renewing: nil) {
                    logger.notice("holding the broker lease", metadata: ["holder": "\(held.holder)", "term": "\(held.term)"])
                    return held
                }
                if !said { logger.notice("another broker holds the lease; standing by", metadata: ["holder": "\(lease.holder)"]); said = true }
            } catch {
                logger.warning("cannot reach the store to claim the lease", metadata: ["error": "\(error)"])
            }
            try await Task.sleep(for: lease.duration / 4)
        }
    }

    /// A holder frozen (stopped, swapped out, paused by its hypervisor) inside a transaction keeps
    /// that transaction's locks for as long as it stays frozen, and every claim of the lease would
    /// wait on them: once its lease has lapsed, its sessions idle inside a transaction for longer
    /// than a whole lease are ended (a live broker's transactions take milliseconds). Whatever the
    /// frozen broker had not committed is rolled back; on waking it finds its session gone and its
    /// lease taken, and stops.
    static func fenceLapsedHolder(_ lease: BrokerLeaseSettings, store: any BrokerStore, logger: Logger) async {
        do {
            let ended = try await store.fenceLapsedHolder(lease.name, claimant: lease.holder, idleLongerThan: lease.duration.seconds, now: Date())
            if ended > 0 {
                logger.warning("ended database sessions that the lapsed lease's holder left inside a transaction (a frozen broker?)",
                               metadata: ["sessions": "\(ended)"])
            }
        } catch {
            logger.warning("could not fence the lapsed lease's holder", metadata: ["error": "\(error)"])
        }
    }

    /// Renews the lease every third of its duration; throws `LeaseLost` once another broker took it,
    /// or when the store stayed unreachable until it lapsed. A lapse nobody used (this process was
    /// frozen or slow, and no standby claimed the lease) is renewed under the same term.
    static func keep(_ lease: BrokerLeaseSettings, _ held: BrokerLease, store: any BrokerStore, logger: Logger) async throws {
        var expires = held.expiresAt
        while true {
            try await Task.sleep(for: lease.duration / 3)
            do {
                expires = try await renew(lease, held, store: store).expiresAt
            } catch let lost as LeaseLost {
                lease.onLost?(lost)
                throw lost
            } catch {
                logger.warning("could not renew the broker lease", metadata: ["error": "\(error)"])
                guard Date() >= expires else { continue }
                // Lapsed: one more try on a fresh session tells a lease taken (this process was
                // frozen and its session ended by the successor: the failed call above) or still
                // ours from a store still out of reach.
                do {
                    expires = try await renew(lease, held, store: store).expiresAt
                } catch {
                    let lost = error as? LeaseLost
                        ?? LeaseLost(description: "the '\(lease.name)' lease lapsed while the store was unreachable; this one stops serving")
                    lease.onLost?(lost)
                    throw lost
                }
            }
        }
    }

    /// One renewal, within the lease's duration (a store that does not answer is a failed renewal).
    static func renew(_ lease: BrokerLeaseSettings, _ held: BrokerLease, store: any BrokerStore) async throws -> BrokerLease {
        let renewed = try await answered(within: lease.duration) {
            try await store.claimLease(lease.name, holder: lease.holder, duration: lease.duration.seconds, now: Date(), renewing: held.term)
        }
        guard let renewed else { throw LeaseLost(description: "another broker took the '\(lease.name)' lease; this one stops serving") }
        return renewed
    }

    /// Serves the broker on `host:port` (0: any free port) while `body` runs, then shuts down
    /// gracefully: plans stop, gateway streams close, in-flight calls finish.
    public static func serve<R: Sendable>(
        host: String = "127.0.0.1", port: Int, credentials: TLSCredentials, store: any BrokerStore,
        settings: BrokerCoordinator.Settings = .init(), revocationPoll: Duration = .seconds(1), limits: TransportLimits = .init(),
        issuer: CertificateIssuer? = nil, enrolmentPort: Int? = nil, lease: BrokerLeaseSettings? = nil,
        metrics: FedGateMetrics = FedGateMetrics(), auditHeadInterval: Duration = .seconds(5), logger: Logger,
        body: @escaping @Sendable (BrokerHandle) async throws -> R
    ) async throws -> R {
        // A standby waits here, not listening: gateways find the leader among the brokers they know.
        var held: BrokerLease?
        if let lease { held = try await lead(lease, store: store, logger: logger) }
        let audit = auditor(store, settings.brokerID)
        let (connectionGuard, interceptor) = try await gatekeepers(store: store, limits: limits, audit: audit, logger: logger)
        let coordinator = BrokerCoordinator(settings: settings, store: store, chunkBytes: limits.chunkBytes, metrics: metrics, logger: logger)
        metrics.announce(.broker, certificateNotAfter: credentials.notAfter)
        let service = BrokerService(coordinator: coordinator, store: store, limits: limits, issuer: issuer, logger: logger)
        let transport = try FedGateTransports.server(host: host, port: port, credentials: credentials, guard: connectionGuard, limits: limits)
        let enrolment = try enrolmentListener(host: host, port: enrolmentPort, issuer: issuer, credentials: credentials, store: store,
                                              limits: limits, audit: audit, logger: logger)
        return try await withGRPCServer(transport: transport, services: [service], interceptors: [interceptor, ErrorStatusInterceptor(logger: logger)]) { _ in
            guard let bound = try await transport.listeningAddress.ipv4?.port else {
                throw ServiceSetupError.noListeningPort(listener: "broker's IPv4")
            }
            logger.info("broker listening", metadata: ["address": "\(host):\(bound)", "id": "\(credentials.identity.id)"])
            return try await withOptionalServer(enrolment) { enrolmentBound in
                let handle = BrokerHandle(port: bound, enrolmentPort: enrolmentBound, coordinator: coordinator, connectionGuard: connectionGuard)
                let heads = AuditHeadKeeper(store: store, credentials: credentials, logger: logger)
                await coordinator.exchangeAuditHeads(heads, caPEM: credentials.caPEM)
                do {
                    // Plans the store says are running (a restart, or the lead taken over) go on.
                    try await coordinator.recover(fence: zip(lease, held).map { LeaseFence(name: $0.name, holder: $0.holder, term: $1.term) })
                } catch {
                    await coordinator.shutdown()
                    throw error
                }
                let result = ResultBox<R>()
                var services: [any Service] = [RevocationPoll(store: store, every: revocationPoll, connectionGuard: connectionGuard, interceptor: interceptor),
                                               AuditHeadSigning(keeper: heads, every: auditHeadInterval), PlanRunner(coordinator: coordinator)]
                if let lease, let held { services.append(LeaseKeeping(lease: lease, held: held, store: store, logger: logger)) }
                services.append(ServingBody(body: { try await body(handle) }, result: result))
                // Any part ending (the body done, the lease lost) stops the others, in reverse order.
                try await ServiceGroup(running: services, logger: logger).run()
                guard let value = result.get() else { throw CancellationError() }
                return value
            }
        }
    }

    /// Records a refusal in the audit trail without holding up the connection that caused it.
    private static func auditor(_ store: any BrokerStore, _ brokerID: String) -> @Sendable (AuditEvent, String) -> Void {
        { event, subject in
            Task { try? await store.audit(event, actor: brokerID, subject: subject, at: Date()) }
        }
    }

    /// The connection guard (handshakes, revocations, loaded from the store) and the per-call
    /// authorisation, each auditing what it refuses.
    private static func gatekeepers(store: any BrokerStore, limits: TransportLimits, audit: @escaping @Sendable (AuditEvent, String) -> Void,
                                    logger: Logger) async throws -> (ConnectionGuard, AuthorizationInterceptor) {
        let connectionGuard = ConnectionGuard(handshakeTimeout: limits.handshakeTimeout, refusalInterval: limits.refusalInterval,
                                              rateLimit: limits.handshakeRateLimit, logger: logger) { refusal in
            audit(.refused(.connection, .init(reason: refusal.reason, count: refusal.count, peer: refusal.peer)), refusal.identity ?? refusal.peer)
        }
        let revoked = try await store.revocations()
        connectionGuard.revoke(identities: revoked.identities, fingerprints: revoked.fingerprints, serials: revoked.serials)
        let interceptor = AuthorizationInterceptor(guard: connectionGuard, admission: { identity in await admission(of: identity, lookup: { try await store.party($0) }) },
                                                   refusalInterval: limits.refusalInterval, logger: logger) { refusal in
            audit(.refused(.call, .init(reason: refusal.reason, count: refusal.count, method: refusal.method)), refusal.identity ?? "-")
        }
        return (connectionGuard, interceptor)
    }

    /// Enrolment by token needs the CA; it gets its own listener without client certificates.
    private static func enrolmentListener(host: String, port: Int?, issuer: CertificateIssuer?, credentials: TLSCredentials, store: any BrokerStore,
                                          limits: TransportLimits, audit: @escaping @Sendable (AuditEvent, String) -> Void,
                                          logger: Logger) throws -> (transport: HTTP2ServerTransport.Posix, service: EnrollmentService)? {
        guard let port else { return nil }
        guard let issuer else { throw ServiceSetupError.enrolmentNeedsCA }
        let openGuard = ConnectionGuard(clientCertificates: false, handshakeTimeout: limits.handshakeTimeout, rateLimit: limits.handshakeRateLimit,
                                        logger: logger) { refusal in
            audit(.refused(.connection, .init(reason: refusal.reason, peer: refusal.peer, listener: "enrolment")), refusal.peer)
        }
        return (FedGateTransports.enrolmentServer(host: host, port: port, credentials: credentials, guard: openGuard),
                EnrollmentService(issuer: issuer, store: store, logger: logger))
    }

    /// Whether an identity with a valid certificate may call this broker at all: a silo must be an
    /// enrolled party of the consortium (not revoked) in the region its certificate names; nil
    /// when it may, else why not. A store that cannot be reached, or does not answer within
    /// `limit`, refuses (deny by default): the silo's call fails and it tries again.
    static func admission(of identity: Identity, lookup: @escaping @Sendable (String) async throws -> Party?,
                          within limit: Duration = .seconds(5)) async -> String? {
        guard identity.role == .silo else { return nil }
        let party: Party?
        do { party = try await answered(within: limit) { try await lookup(identity.id) } } catch {
            return "the broker cannot check \(identity)'s enrolment now (its store is unreachable or does not answer); try again"
        }
        guard let party, party.kind == .silo else {
            return "\(identity) is not enrolled at this broker: the consortium operator enrols it (fedgate silo approve, fedgate silo invite "
                + "with fedgate gateway enroll, or fedgate silo enrol for a certificate the CA already issued)"
        }
        if party.revokedAt != nil { return "\(identity.id) is revoked" }
        guard party.region == identity.region else {
            return "\(identity.id) is enrolled in region '\(party.region)', but its certificate names '\(identity.region ?? "")'; ask the operator for a certificate of the enrolled region"
        }
        return nil
    }

    /// Runs the enrolment listener around `body` when there is one.
    private static func withOptionalServer<R: Sendable>(_ enrolment: (transport: HTTP2ServerTransport.Posix, service: EnrollmentService)?,
                                                        _ body: (Int?) async throws -> R) async throws -> R {
        guard let enrolment else { return try await body(nil) }
        return try await withGRPCServer(transport: enrolment.transport, services: [enrolment.service]) { _ in
            try await body(try await enrolment.transport.listeningAddress.ipv4?.port)
        }
    }
}

private func zip<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
