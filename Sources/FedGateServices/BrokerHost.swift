import FedGatePKI
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// A running broker: its listener, coordinator and connection guard.
public struct BrokerHandle: Sendable {
    public let port: Int
    /// The enrolment listener's port, when the broker enrols silos by token.
    public let enrolmentPort: Int?
    public let coordinator: BrokerCoordinator
    public let connectionGuard: ConnectionGuard

    /// Revokes an identity: recorded in the store, refused from the next handshake on, and its
    /// open connections closed now.
    public func revoke(_ id: String, store: any RegistryBackend, actor: String) async throws {
        if try await store.party(id) != nil { try await store.revoke(party: id, at: Date(), actor: actor) }
        connectionGuard.revoke(id)
    }
}

public enum BrokerHost {
    /// Serves the broker on `host:port` (0: any free port) while `body` runs, then shuts down
    /// gracefully: plans stop, gateway streams close, in-flight calls finish.
    public static func serve<R: Sendable>(
        host: String = "127.0.0.1", port: Int, credentials: TLSCredentials, store: any RegistryBackend & LedgerBackend,
        settings: BrokerCoordinator.Settings = .init(), revocationPoll: Duration = .seconds(1), limits: TransportLimits = .init(),
        issuer: CertificateIssuer? = nil, enrolmentPort: Int? = nil, logger: Logger,
        body: (BrokerHandle) async throws -> R
    ) async throws -> R {
        let audit: @Sendable (String, String, String) -> Void = { action, subject, payload in
            Task { try? await store.audit(actor: settings.brokerID, action: action, subject: subject, payload: payload, at: Date()) }
        }
        let connectionGuard = ConnectionGuard(revoked: try await store.revokedParties(), logger: logger) { refusal in
            audit("connection.refuse", refusal.identity ?? refusal.peer, canonicalPayload(["peer": refusal.peer, "reason": refusal.reason]))
        }
        let interceptor = AuthorizationInterceptor(guard: connectionGuard, logger: logger) { refusal in
            audit("call.refuse", refusal.identity ?? "-", canonicalPayload(["method": refusal.method, "reason": refusal.reason]))
        }
        let coordinator = BrokerCoordinator(settings: settings, store: store, chunkBytes: limits.chunkBytes, logger: logger)
        let service = BrokerService(coordinator: coordinator, store: store, limits: limits, issuer: issuer, logger: logger)
        let transport = try FedGateTransports.server(host: host, port: port, credentials: credentials, guard: connectionGuard, limits: limits)
        // Enrolment by token needs the CA; it gets its own listener without client certificates.
        let enrolment: (transport: HTTP2ServerTransport.Posix, service: EnrollmentService)?
        if let enrolmentPort {
            guard let issuer else { throw RoundError("enrolment by token needs the broker to hold the CA (issuing)") }
            let openGuard = ConnectionGuard(clientCertificates: false, logger: logger) { refusal in
                audit("connection.refuse", refusal.peer, canonicalPayload(["peer": refusal.peer, "reason": refusal.reason, "listener": "enrolment"]))
            }
            enrolment = (FedGateTransports.enrolmentServer(host: host, port: enrolmentPort, credentials: credentials, guard: openGuard),
                         EnrollmentService(issuer: issuer, store: store, logger: logger))
        } else {
            enrolment = nil
        }
        return try await withGRPCServer(transport: transport, services: [service], interceptors: [interceptor]) { _ in
            guard let bound = try await transport.listeningAddress.ipv4?.port else {
                throw RoundError("the broker's listener has no IPv4 address")
            }
            logger.info("broker listening", metadata: ["address": "\(host):\(bound)", "id": "\(credentials.identity.id)"])
            return try await withOptionalServer(enrolment) { enrolmentBound in
                let handle = BrokerHandle(port: bound, enrolmentPort: enrolmentBound, coordinator: coordinator, connectionGuard: connectionGuard)
                // Revocations recorded in the store (`fedgate silo revoke`) reach the running broker within a poll.
                let watcher = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: revocationPoll)
                        guard let revoked = try? await store.revokedParties() else { continue }
                        for id in revoked where !connectionGuard.isRevoked(id) { connectionGuard.revoke(id) }
                    }
                }
                defer { watcher.cancel() }
                do {
                    let result = try await body(handle)
                    await coordinator.shutdown()
                    return result
                } catch {
                    await coordinator.shutdown()
                    throw error
                }
            }
        }
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
