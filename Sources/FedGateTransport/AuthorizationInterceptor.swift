import FedGatePKI
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import X509

/// Runs before every handler: takes the caller's identity from its certificate, checks the
/// connection guard's revocations (of the identity and of this very certificate), applies
/// `BrokerAuthorization`, then asks `admission` whether the identity is admitted at all (a silo
/// must be enrolled). Refusals are logged and reported (for the audit trail), through a throttle so
/// a caller repeating a refused call writes a bounded number of records; none reaches a handler.
public struct AuthorizationInterceptor: ServerInterceptor {
    public struct Refusal: Sendable {
        public let identity: String?
        public let method: String
        public let reason: String
        /// How many refusals of this kind from this caller the record stands for.
        public var count = 1
    }

    let connectionGuard: ConnectionGuard
    let admission: @Sendable (Identity) async -> String?
    let logger: Logger
    let onRefusal: @Sendable (Refusal) -> Void
    let throttle: RefusalThrottle<Refusal>

    /// `admission`: nil when the identity may call the broker at all, else why not (checked after
    /// the role table, so only callers with a valid certificate of the consortium reach it).
    public init(guard connectionGuard: ConnectionGuard, admission: @escaping @Sendable (Identity) async -> String? = { _ in nil },
                refusalInterval: Duration = .seconds(60), logger: Logger, onRefusal: @escaping @Sendable (Refusal) -> Void = { _ in }) {
        self.connectionGuard = connectionGuard
        self.admission = admission
        self.logger = logger
        self.onRefusal = onRefusal
        throttle = RefusalThrottle(interval: refusalInterval)
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = PeerText.bounded(context.descriptor.method, limit: 64)
        let identity: Identity
        do { identity = try context.callerIdentity } catch {
            refuse(nil, method, "\(error)")
            throw RPCError(code: .unauthenticated, message: "a client certificate with a FedGate identity is required")
        }
        let certificate = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate
        if let reason = certificate.flatMap(connectionGuard.revocation(of:)) ?? (connectionGuard.isRevoked(identity.id) ? "\(identity.id) is revoked" : nil) {
            refuse(identity.id, method, reason)
            throw RPCError(code: .permissionDenied, message: reason)
        }
        if let reason = BrokerAuthorization.refusal(of: identity, calling: method) {
            refuse(identity.id, method, reason)
            throw RPCError(code: .permissionDenied, message: reason)
        }
        if let reason = await admission(identity) {
            refuse(identity.id, method, reason)
            throw RPCError(code: .permissionDenied, message: reason)
        }
        return try await next(request, context)
    }

    /// Reports the counts of refusals held back whose interval has ended.
    public func flushRefusals() {
        for report in throttle.drain() { emit(report) }
    }

    private func refuse(_ identity: String?, _ method: String, _ reason: String) {
        let refusal = Refusal(identity: identity, method: method, reason: PeerText.bounded(reason, limit: 400))
        if let report = throttle.admit(refusal, source: identity ?? "-", kind: "\(method)|\(refusal.reason.prefix(60))") { emit(report) }
    }

    private func emit(_ report: RefusalThrottle<Refusal>.Report) {
        var refusal = report.sample
        refusal.count = report.count
        logger.warning("call refused", metadata: ["identity": "\(refusal.identity ?? "-")", "method": "\(refusal.method)", "reason": "\(refusal.reason)",
                                                  "count": "\(refusal.count)"])
        onRefusal(refusal)
    }
}
