import FedGatePKI
import Foundation
import Logging
import NIOCore
import NIOPosix
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
    /// A refused connection. `peer`, `identity` and `reason` are bounded and escaped (they may hold
    /// what an unauthenticated peer wrote into its certificate); `count` is how many refusals of
    /// this kind from this peer the record stands for (see `RefusalThrottle`).
    public struct Refusal: Sendable, Equatable {
        public let peer: String
        public let identity: String?
        public let reason: String
        public var count = 1

        public init(peer: String, identity: String?, reason: String) {
            self.peer = PeerText.bounded(peer, limit: 64)
            self.identity = identity.map { PeerText.bounded($0, limit: 64) }
            self.reason = PeerText.bounded(reason, limit: 400)
        }
    }

    /// One admitted connection, with what its certificate can be revoked by.
    private struct Admitted {
        let channel: any Channel
        let fingerprint: String
        let serial: String
    }

    private struct State {
        var admitted = 0
        var revoked: Set<String> = []
        var revokedFingerprints: Set<String> = []
        var revokedSerials: Set<String> = []
        var open: [String: [ObjectIdentifier: Admitted]] = [:]
    }

    private let state = Mutex(State())
    private let throttle: RefusalThrottle<Refusal>
    private let rate: Mutex<HandshakeRateLimit>
    /// False on the enrolment listener, where peers have no certificate yet: only TLS 1.3 is checked.
    private let clientCertificates: Bool
    /// A connection whose TLS handshake has not completed by then is closed (and reported): a peer
    /// that opens connections and never finishes them must not hold the broker's descriptors.
    let handshakeTimeout: TimeAmount
    private let logger: Logger
    private let onRefusal: @Sendable (Refusal) -> Void

    /// `onRefusal` is called (on an event loop: keep it short) for every refused connection, for auditing.
    public init(revoked: Set<String> = [], clientCertificates: Bool = true, handshakeTimeout: Duration = .seconds(10),
                refusalInterval: Duration = .seconds(60), rateLimit: HandshakeRateLimit = HandshakeRateLimit(),
                logger: Logger, onRefusal: @escaping @Sendable (Refusal) -> Void = { _ in }) {
        state.withLock { $0.revoked = revoked }
        rate = Mutex(rateLimit)
        throttle = RefusalThrottle(interval: refusalInterval)
        self.clientCertificates = clientCertificates
        self.handshakeTimeout = TimeAmount(handshakeTimeout)
        self.logger = logger
        self.onRefusal = onRefusal
    }

    /// Refuses `id` from its next handshake on and closes its open connections now; returns how many were closed.
    @discardableResult
    public func revoke(_ id: String) -> Int { revoke(identities: [id]) }

    /// Refuses these identities and certificates (by SHA-256 fingerprint or serial, lower-case hex)
    /// from their next handshake on and closes their open connections now; returns how many closed.
    @discardableResult
    public func revoke(identities: Set<String>, fingerprints: Set<String> = [], serials: Set<String> = []) -> Int {
        let channels = state.withLock { s -> [any Channel] in
            s.revoked.formUnion(identities)
            s.revokedFingerprints.formUnion(fingerprints)
            s.revokedSerials.formUnion(serials)
            var closing: [any Channel] = []
            for (id, connections) in s.open {
                for (key, c) in connections where identities.contains(id) || fingerprints.contains(c.fingerprint) || serials.contains(c.serial) {
                    closing.append(c.channel)
                    s.open[id]?.removeValue(forKey: key)
                }
                if s.open[id]?.isEmpty == true { s.open.removeValue(forKey: id) }
            }
            return closing
        }
        for channel in channels { channel.close(promise: nil) }
        if !channels.isEmpty || !identities.isEmpty {
            logger.notice("revoked; open connections closed", metadata: ["identities": "\(identities.sorted())", "certificates": "\(fingerprints.count + serials.count)",
                                                                          "closed": "\(channels.count)"])
        }
        return channels.count
    }

    public func isRevoked(_ id: String) -> Bool { state.withLock { $0.revoked.contains(id) } }

    /// Why a certificate is revoked (its identity, its fingerprint or its serial), or nil.
    public func revocation(of certificate: Certificate) -> String? {
        state.withLock { s in Self.revocation(of: certificate, identities: s.revoked, fingerprints: s.revokedFingerprints, serials: s.revokedSerials) }
    }

    /// Why a certificate is revoked by these lists, or nil.
    public static func revocation(of certificate: Certificate, identities: Set<String>, fingerprints: Set<String>, serials: Set<String>) -> String? {
        let (fingerprint, serial) = references(certificate)
        if let id = try? Identity(subject: certificate.subject).id, identities.contains(id) { return "\(id) is revoked" }
        if fingerprints.contains(fingerprint) { return "the certificate with SHA-256 \(fingerprint.prefix(16))… is revoked" }
        if serials.contains(serial) { return "the certificate with serial \(serial) is revoked" }
        return nil
    }

    /// What a certificate can be revoked by: its SHA-256 fingerprint and its serial, lower-case hex.
    public static func references(_ certificate: Certificate) -> (fingerprint: String, serial: String) {
        let fingerprint = (try? certificate.sha256Fingerprint) ?? ""
        let serial = certificate.serialNumber.bytes.map { String(format: "%02x", $0) }.joined()
        return (fingerprint, serial)
    }

    /// Reports the counts of refusals held back whose interval has ended (call it now and then).
    public func flushRefusals() {
        for report in throttle.drain() { emit(report) }
    }

    /// Connections admitted since start.
    public var admittedTotal: Int { state.withLock { $0.admitted } }

    /// Admitted connections per identity.
    public func openConnections(of id: String) -> Int { state.withLock { $0.open[id]?.count ?? 0 } }

    /// The hook for the server transport's `onAcceptTCPConnection`: installs the gate behind the TLS
    /// handler, and before it the marker that tells the verification callback whose handshake it is.
    public var acceptCallback: @Sendable (any Channel) -> EventLoopFuture<Void> {
        { [self] channel in
            let source = channel.remoteAddress.map(Self.source(of:)) ?? "unknown peer"
            guard rate.withLock({ $0.admit(source, at: .now) }) else {
                // Over its rate: closed before any TLS work, and reported through the throttle.
                refused(Refusal(peer: source, identity: nil, reason: "too many new connections from this address; try again later"))
                return channel.close()
            }
            return channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                let tls = try pipeline.handler(type: NIOSSLHandler.self)
                try pipeline.addHandler(PeerMarker(address: source), position: .before(tls))
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
            // Called on the connection's event loop, inside the read the marker is passing on.
            let peer = PeerMarker.current ?? "TLS handshake"
            promise.completeWithTask { await self.verify(presented, root: root, peer: peer) }
        }
    }

    func verify(_ presented: [NIOSSLCertificate], root: Certificate, peer: String) async -> NIOSSLVerificationResultWithMetadata {
        guard let first = presented.first, let leaf = try? Certificate(derEncoded: try first.toDERBytes()) else {
            refused(Refusal(peer: peer, identity: nil, reason: "the client certificate cannot be read"))
            return .failed
        }
        // Unverified: what the peer wrote into its certificate, bounded before it goes anywhere.
        let claimed = (try? Identity(subject: leaf.subject))?.id ?? PeerText.bounded("\(leaf.subject)", limit: 64)
        let intermediates = presented.dropFirst().prefix(8).compactMap { try? Certificate(derEncoded: try $0.toDERBytes()) }
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            RFC5280Policy()
            ClientAuthenticationPolicy()
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates)) {
        case .validCertificate(let chain):
            if let reason = revocation(of: leaf) {
                refused(Refusal(peer: peer, identity: claimed, reason: reason))
                return .failed
            }
            let nio = try? chain.map { try NIOSSLCertificate(bytes: try $0.serializeAsPEM().derBytes, format: .der) }
            return .certificateVerified(VerificationMetadata(nio.map(ValidatedCertificateChain.init)))
        case .couldNotValidate(let failures):
            // The policies describe each certificate in full; the record names it once, in words.
            let (leafText, rootText) = ("\(leaf)", "\(root)")
            var reasons = failures.map {
                "\($0.policyFailureReason)".replacingOccurrences(of: leafText, with: "(the presented certificate)")
                    .replacingOccurrences(of: rootText, with: "(the consortium CA)")
            }.joined(separator: "; ")
            if reasons.isEmpty {
                // swift-certificates names no failed policy when no chain to a trusted root exists.
                reasons = "no chain to the consortium CA (issued by '\(PeerText.bounded("\(leaf.issuer)", limit: 120))', not by this consortium's CA)"
            }
            refused(Refusal(peer: peer, identity: nil, reason: "certificate claiming '\(claimed)' refused: \(reasons)"))
            return .failed
        }
    }

    /// A peer address as one source for the refusal throttle: the host, without the port.
    static func source(of address: SocketAddress) -> String {
        address.ipAddress ?? "\(address)"
    }

    fileprivate func decide(_ channel: any Channel, tlsVersion: TLSVersion?, peer: NIOSSLCertificate?) -> Refusal? {
        let address = channel.remoteAddress.map(Self.source(of:)) ?? "unknown peer"
        guard tlsVersion == .tlsv13 else {
            return Refusal(peer: address, identity: nil, reason: "TLS 1.3 is required; the peer negotiated \(tlsVersion.map { "\($0)" } ?? "no version")")
        }
        guard clientCertificates else { return nil }
        guard let peer else { return Refusal(peer: address, identity: nil, reason: "no client certificate") }
        let identity: Identity, certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: try peer.toDERBytes())
            identity = try Identity(subject: certificate.subject)
        } catch {
            return Refusal(peer: address, identity: nil, reason: "the certificate carries no FedGate identity: \(error)")
        }
        let (fingerprint, serial) = Self.references(certificate)
        let admitted = state.withLock { s -> Bool in
            guard !s.revoked.contains(identity.id), !s.revokedFingerprints.contains(fingerprint), !s.revokedSerials.contains(serial) else { return false }
            s.admitted += 1
            s.open[identity.id, default: [:]][ObjectIdentifier(channel)] = Admitted(channel: channel, fingerprint: fingerprint, serial: serial)
            return true
        }
        guard admitted else { return Refusal(peer: address, identity: identity.id, reason: revocation(of: certificate) ?? "\(identity) is revoked") }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { s in
                s.open[identity.id]?.removeValue(forKey: ObjectIdentifier(channel))
                if s.open[identity.id]?.isEmpty == true { s.open.removeValue(forKey: identity.id) }
            }
        }
        logger.debug("connection admitted", metadata: ["identity": "\(identity)", "peer": "\(address)"])
        return nil
    }

    /// A refusal, through the throttle: recorded now, or counted into the next record of its kind.
    fileprivate func refused(_ refusal: Refusal) {
        // The kind: who it claimed to be and why, without the details that vary between attempts.
        let kind = "\(refusal.identity ?? "-")|\(refusal.reason.prefix(60))"
        if let report = throttle.admit(refusal, source: refusal.peer, kind: kind) { emit(report) }
    }

    private func emit(_ report: RefusalThrottle<Refusal>.Report) {
        var refusal = report.sample
        refusal.count = report.count
        logger.warning("connection refused", metadata: [
            "peer": "\(refusal.peer)", "identity": "\(refusal.identity ?? "-")", "reason": "\(refusal.reason)", "count": "\(refusal.count)",
        ])
        onRefusal(refusal)
    }
}

/// Sits in front of the TLS handler and names, while a read passes through it, the peer the read
/// came from: the certificate verification callback, which NIOSSL calls during that read without
/// saying which connection it is for, attributes its refusals with it.
private final class PeerMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private final class Box: Sendable { let address: String; init(_ address: String) { self.address = address } }
    private static let marked = ThreadSpecificVariable<Box>()

    /// The peer whose bytes this thread is handling now, if any.
    static var current: String? { marked.currentValue?.address }

    private let box: Box
    init(address: String) { box = Box(address) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let previous = Self.marked.currentValue
        Self.marked.currentValue = box
        defer { Self.marked.currentValue = previous }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        let previous = Self.marked.currentValue
        Self.marked.currentValue = box
        defer { Self.marked.currentValue = previous }
        context.fireChannelReadComplete()
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
            let address = context.channel.remoteAddress.map(ConnectionGuard.source(of:)) ?? "unknown peer"
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
            let address = context.channel.remoteAddress.map(ConnectionGuard.source(of:)) ?? "unknown peer"
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
