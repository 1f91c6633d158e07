import FedGatePKI
import GRPCCore
import Logging

/// Runs before every handler: takes the caller's identity from its certificate, checks the
/// connection guard's revocation list, and applies `BrokerAuthorization`. Refusals are logged and
/// reported (for the audit trail); none reaches a handler.
public struct AuthorizationInterceptor: ServerInterceptor {
    public struct Refusal: Sendable {
        public let identity: String?
        public let method: String
        public let reason: String
    }

    let connectionGuard: ConnectionGuard
    let logger: Logger
    let onRefusal: @Sendable (Refusal) -> Void

    public init(guard connectionGuard: ConnectionGuard, logger: Logger, onRefusal: @escaping @Sendable (Refusal) -> Void = { _ in }) {
        self.connectionGuard = connectionGuard
        self.logger = logger
        self.onRefusal = onRefusal
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.method
        let identity: Identity
        do { identity = try context.callerIdentity } catch {
            refuse(nil, method, "\(error)")
            throw RPCError(code: .unauthenticated, message: "a client certificate with a FedGate identity is required")
        }
        if connectionGuard.isRevoked(identity.id) {
            refuse(identity.id, method, "\(identity) is revoked")
            throw RPCError(code: .permissionDenied, message: "\(identity.id) is revoked")
        }
        if let reason = BrokerAuthorization.refusal(of: identity, calling: method) {
            refuse(identity.id, method, reason)
            throw RPCError(code: .permissionDenied, message: reason)
        }
        return try await next(request, context)
    }

    private func refuse(_ identity: String?, _ method: String, _ reason: String) {
        logger.warning("call refused", metadata: ["identity": "\(identity ?? "-")", "method": "\(method)", "reason": "\(reason)"])
        onRefusal(Refusal(identity: identity, method: method, reason: reason))
    }
}
