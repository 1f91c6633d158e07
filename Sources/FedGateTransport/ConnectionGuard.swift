import FedGatePKI
import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization
import SwiftASN1
import X509

/// The broker's door. BoringSSL has already refused peers without a certificate from the
/// consortium CA or with an expired one; the guard then refuses, before any gRPC byte is read,
/// connections that negotiated less than TLS 1.3, whose certificate carries no valid identity, or
/// whose identity is revoked. It also keeps every admitted connection by identity so revoking a
/// silo closes its open connections at once.
public final class ConnectionGuard: Sendable {
    public struct Refusal: Sendable, Equatable {
        public let peer: String
        public let identity: String?
        public let reason: String
    }

    private struct State {
        var admitted = 0
        var revoked: Set<String> = []
        var open: [String: [ObjectIdentifier: any Channel]] = [:]
    }

    private let state = Mutex(State())
    /// False on the enrolment listener, where peers have no certificate yet: only TLS 1.3 is checked.
    private let clientCertificates: Bool
    /// A connection whose TLS handshake has not completed by then is closed (and reported): a peer
    /// that opens connections and never finishes them must not hold the broker's descriptors.
    let handshakeTimeout: TimeAmount
    private let logger: Logger
    private let onRefusal: @Sendable (Refusal) -> Void

    /// `onRefusal` is called (on an event loop: keep it short) for every refused connection, for auditing.
    public init(revoked: Set<String> = [], clientCertificates: Bool = true, handshakeTimeout: Duration = .seconds(10), logger: Logger,
                onRefusal: @escaping @Sendable (Refusal) -> Void = { _ in }) {
        state.withLock { $0.revoked = revoked }
        self.clientCertificates = clientCertificates
        self.handshakeTimeout = TimeAmount(handshakeTimeout)
        self.logger = logger
        self.onRefusal = onRefusal
    }

    /// Refuses `id` from its next handshake on and closes its open connections now; returns how many were closed.
    @discardableResult
    public func revoke(_ id: String) -> Int {
        let channels = state.withLock { s -> [any Channel] in
            s.revoked.insert(id)
            return Array((s.open.removeValue(forKey: id) ?? [:]).values)
        }
        for channel in channels { channel.close(promise: nil) }
        logger.notice("identity revoked; open connections closed", metadata: ["identity": "\(id)", "closed": "\(channels.count)"])
        return channels.count
    }

    public func isRevoked(_ id: String) -> Bool { state.withLock { $0.revoked.contains(id) } }

    /// Connections admitted since start.
    public var admittedTotal: Int { state.withLock { $0.admitted } }

    /// Admitted connections per identity.
    public func openConnections(of id: String) -> Int { state.withLock { $0.open[id]?.count ?? 0 } }

    /// The hook for the server transport's `onAcceptTCPConnection`: installs the gate behind the TLS handler.
    public var acceptCallback: @Sendable (any Channel) -> EventLoopFuture<Void> {
        { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                let tls = try pipeline.handler(type: NIOSSLHandler.self)
                try pipeline.addHandler(HandshakeGate(guard: self), position: .after(tls))
            }
        }
    }

    /// The TLS layer's check of a client's certificate chain, done with swift-certificates so each
    /// refusal says why (expired, another CA, not for client authentication, revoked) and is audited.
    public func verificationCallback(trusting caPEM: String) throws
        -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
        let root = try Certificate(pemEncoded: caPEM)
        return { [self] presented, promise in
            promise.completeWithTask { await self.verify(presented, root: root) }
        }
    }

    func verify(_ presented: [NIOSSLCertificate], root: Certificate) async -> NIOSSLVerificationResultWithMetadata {
        guard let first = presented.first, let leaf = try? Certificate(derEncoded: try first.toDERBytes()) else {
            refused(Refusal(peer: "TLS handshake", identity: nil, reason: "the client certificate cannot be read"))
            return .failed
        }
        let claimed = (try? Identity(subject: leaf.subject))?.id ?? "\(leaf.subject)"
        let intermediates = presented.dropFirst().compactMap { try? Certificate(derEncoded: try $0.toDERBytes()) }
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            RFC5280Policy()
            ClientAuthenticationPolicy()
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates)) {
        case .validCertificate(let chain):
            if isRevoked(claimed) {
                refused(Refusal(peer: "TLS handshake", identity: claimed, reason: "\(claimed) is revoked"))
                return .failed
            }
            let nio = try? chain.map { try NIOSSLCertificate(bytes: try $0.serializeAsPEM().derBytes, format: .der) }
            return .certificateVerified(VerificationMetadata(nio.map(ValidatedCertificateChain.init)))
        case .couldNotValidate(let failures):
            let reasons = failures.map { "\($0.policyFailureReason)" }.joined(separator: "; ")
            refused(Refusal(peer: "TLS handshake", identity: nil, reason: "certificate claiming '\(claimed)' refused: \(reasons)"))
            return .failed
        }
    }

    fileprivate func decide(_ channel: any Channel, tlsVersion: TLSVersion?, peer: NIOSSLCertificate?) -> Refusal? {
        let address = channel.remoteAddress.map { "\($0)" } ?? "unknown peer"
        guard tlsVersion == .tlsv13 else {
            return Refusal(peer: address, identity: nil, reason: "TLS 1.3 is required; the peer negotiated \(tlsVersion.map { "\($0)" } ?? "no version")")
        }
        guard clientCertificates else { return nil }
        guard let peer else { return Refusal(peer: address, identity: nil, reason: "no client certificate") }
        let identity: Identity
        do {
            identity = try Identity(subject: try Certificate(derEncoded: try peer.toDERBytes()).subject)
        } catch {
            return Refusal(peer: address, identity: nil, reason: "the certificate carries no FedGate identity: \(error)")
        }
        let admitted = state.withLock { s -> Bool in
            guard !s.revoked.contains(identity.id) else { return false }
            s.admitted += 1
            s.open[identity.id, default: [:]][ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else { return Refusal(peer: address, identity: identity.id, reason: "\(identity) is revoked") }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { s in
                s.open[identity.id]?.removeValue(forKey: ObjectIdentifier(channel))
                if s.open[identity.id]?.isEmpty == true { s.open.removeValue(forKey: identity.id) }
            }
        }
        logger.debug("connection admitted", metadata: ["identity": "\(identity)", "peer": "\(address)"])
        return nil
    }

    fileprivate func refused(_ refusal: Refusal) {
        logger.warning("connection refused", metadata: [
            "peer": "\(refusal.peer)", "identity": "\(refusal.identity ?? "-")", "reason": "\(refusal.reason)",
        ])
        onRefusal(refusal)
    }
}

/// Sits right behind the TLS handler of one connection: holds back everything until the handshake
/// is judged, then either steps aside or closes the connection.
private final class HandshakeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let guardian: ConnectionGuard
    private var refused = false
    private var deadline: Scheduled<Void>?

    init(guard: ConnectionGuard) { guardian = `guard` }

    func handlerAdded(context: ChannelHandlerContext) {
        let timeout = guardian.handshakeTimeout
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            let context = loopBound.value
            guard !refused else { return }
            refused = true
            let address = context.channel.remoteAddress.map { "\($0)" } ?? "unknown peer"
            let seconds = Double(timeout.nanoseconds) / 1e9
            guardian.refused(.init(peer: address, identity: nil, reason: "TLS handshake not completed within \(seconds) s; connection closed"))
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only reached before the verdict (or after a refusal): nothing passes.
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        deadline?.cancel()
        deadline = nil
        let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
        if let refusal = guardian.decide(context.channel, tlsVersion: tls?.tlsVersion, peer: tls?.peerCertificate) {
            refused = true
            guardian.refused(refusal)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A chain the verification callback refused was already reported, with its reason; a peer
        // that hangs up mid-handshake was not refused, it left (logged, not audited).
        let text = "\(error)"
        if text.contains("EOF during handshake") || error as? NIOSSLError == .uncleanShutdown {
            context.fireErrorCaught(error)
            return
        }
        if !refused, error is NIOSSLError || error is BoringSSLError, !text.contains("CERTIFICATE_VERIFY_FAILED") {
            refused = true
            let address = context.channel.remoteAddress.map { "\($0)" } ?? "unknown peer"
            guardian.refused(.init(peer: address, identity: nil, reason: "TLS handshake failed: \(error)"))
        }
        context.fireErrorCaught(error)
    }
}

/// The leaf must be meant for client authentication (extended key usage clientAuth).
struct ClientAuthenticationPolicy: VerifierPolicy {
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.extendedKeyUsage]

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        guard let usage = try? chain.leaf.extensions.extendedKeyUsage, usage.contains(.clientAuth) else {
            return .failsToMeetPolicy(reason: "the certificate is not for client authentication (extended key usage lacks clientAuth)")
        }
        return .meetsPolicy
    }
}
