import FedGatePKI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import X509

/// What a party presents and trusts on every connection: its certificate and key, and the
/// consortium CA. Read from PEM files; errors name the file and what to do.
public struct TLSCredentials: Sendable {
    public let certificatePEM: String
    public let keyPEM: String
    public let caPEM: String
    /// The identity in our own certificate.
    public let identity: Identity
    public let notAfter: Date

    public init(certificatePEM: String, keyPEM: String, caPEM: String) throws {
        let certificate: Certificate
        do { certificate = try Certificate.leaf(pemEncoded: certificatePEM) } catch {
            throw PKIError("cannot read the certificate: \(error)")
        }
        do { _ = try Certificate(pemEncoded: caPEM) } catch { throw PKIError("cannot read the CA certificate: \(error)") }
        identity = try Identity(subject: certificate.subject)
        notAfter = certificate.notValidAfter
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
        self.caPEM = caPEM
    }

    /// Loads the three PEM files.
    public init(certificate: URL, key: URL, ca: URL) throws {
        func read(_ url: URL, _ what: String) throws -> String {
            do { return try String(contentsOf: url, encoding: .utf8) } catch {
                throw PKIError("cannot read the \(what) at \(url.path): \(error.localizedDescription); check the path in the config")
            }
        }
        try self.init(certificatePEM: read(certificate, "certificate"), keyPEM: read(key, "private key"), caPEM: read(ca, "CA certificate"))
    }
}

/// Limits shared by both ends.
public struct TransportLimits: Sendable {
    /// Largest single gRPC message (a chunk, an offer): 4 MiB.
    public var maximumMessageBytes = 4 << 20
    /// Chunk size for models and updates: 1 MiB.
    public var chunkBytes = 1 << 20
    /// Largest model or update payload: 256 MiB.
    public var maximumPayloadBytes = 256 << 20
    /// Updates the broker reassembles at once; further uploads wait (HTTP/2 flow control holds
    /// their senders), so a large model's round holds this many payloads, not one per silo.
    public var concurrentUploads = 2
    /// A model is downloaded in ranges of this size, one request after another: the broker holds at
    /// most one range per downloading silo in its send buffers.
    public var downloadRangeBytes = 16 << 20
    /// The longest one upload may take from its first byte to its last.
    public var uploadTimeout: Duration = .seconds(600)
    /// HTTP/2 pings on an idle connection after this long, and the connection is closed when one
    /// goes unanswered for `keepaliveTimeout`: a peer that froze or a network that went silent is
    /// noticed within their sum, not when TCP gives up hours later.
    public var keepalive: Duration = .seconds(5)
    public var keepaliveTimeout: Duration = .seconds(5)
    /// The broker closes a connection whose TLS handshake is not done within this long.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Refused connections and calls of one kind from one source are recorded once per interval,
    /// with a count (`RefusalThrottle`).
    public var refusalInterval: Duration = .seconds(60)
    /// New connections one address may open: `handshakeBurst` at once, then `handshakesPerSecond`
    /// (`HandshakeRateLimit`); over it a connection is closed before its TLS handshake.
    public var handshakesPerSecond: Double = 20
    public var handshakeBurst = 200
    public var handshakeRateLimit: HandshakeRateLimit { HandshakeRateLimit(perSecond: handshakesPerSecond, burst: handshakeBurst) }
    public init() {}
}

public enum FedGateTransports {
    /// The broker's listener: TLS with a client certificate from the consortium CA required and
    /// verified, the connection guard behind it, HTTP/2 windows sized for model transfers.
    public static func server(host: String, port: Int, credentials: TLSCredentials, guard connectionGuard: ConnectionGuard,
                              limits: TransportLimits = .init()) throws -> HTTP2ServerTransport.Posix {
        let verify = try connectionGuard.verificationCallback(trusting: credentials.caPEM)
        return HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port),
            transportSecurity: .mTLS(
                certificateChain: [.bytes(Array(credentials.certificatePEM.utf8), format: .pem)],
                privateKey: .bytes(Array(credentials.keyPEM.utf8), format: .pem)
            ) {
                $0.trustRoots = .certificates([.bytes(Array(credentials.caPEM.utf8), format: .pem)])
                $0.clientCertificateVerification = .noHostnameVerification
                $0.customVerificationCallback = verify
            },
            config: .defaults {
                $0.http2.targetWindowSize = 8 << 20
                $0.http2.maxFrameSize = 1 << 20
                $0.rpc.maxRequestPayloadSize = limits.maximumMessageBytes
                $0.connection.keepalive = .init(time: limits.keepalive, timeout: limits.keepaliveTimeout,
                                                clientBehavior: .init(minPingIntervalWithoutCalls: limits.keepalive, allowWithoutCalls: true))
                $0.channelDebuggingCallbacks.onAcceptTCPConnection = connectionGuard.acceptCallback
            })
    }

    /// The broker's enrolment listener: TLS 1.3 (the guard cuts older peers) without client
    /// certificates, for silos that have none yet; small messages only.
    public static func enrolmentServer(host: String, port: Int, credentials: TLSCredentials, guard connectionGuard: ConnectionGuard)
        -> HTTP2ServerTransport.Posix {
        HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port),
            transportSecurity: .tls(
                certificateChain: [.bytes(Array(credentials.certificatePEM.utf8), format: .pem)],
                privateKey: .bytes(Array(credentials.keyPEM.utf8), format: .pem)),
            config: .defaults {
                $0.rpc.maxRequestPayloadSize = 64 << 10
                $0.channelDebuggingCallbacks.onAcceptTCPConnection = connectionGuard.acceptCallback
            })
    }

    /// A connection to the enrolment listener: we verify the broker against the consortium CA
    /// (its certificate, obtained out of band), but have no certificate to present yet.
    public static func enrolmentClient(host: String, port: Int, serverName: String, caPEM: String) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port),
            transportSecurity: .tls {
                $0.trustRoots = .certificates([.bytes(Array(caPEM.utf8), format: .pem)])
                $0.serverCertificateVerification = .fullVerification
            },
            config: .defaults { $0.http2.authority = serverName })
    }

    /// A client connection to the broker, presenting our certificate and trusting only the
    /// consortium CA. The broker's certificate must name `serverName` (its id).
    ///
    /// `requestTimeout` bounds each of the broker's one-answer calls (connecting included: a broker
    /// that accepts the connection and then hangs fails the call instead of holding it); the
    /// gateway's task stream and the streams of models, updates and audit records are not bounded
    /// by it.
    public static func client(host: String, port: Int, serverName: String, credentials: TLSCredentials,
                              limits: TransportLimits = .init(), requestTimeout: Duration? = nil) throws -> HTTP2ClientTransport.Posix {
        let oneAnswer = ["WhoAmI", "Renew", "SubmitPlan", "PlanStatus", "CancelPlan", "ListModels", "RollbackModel", "DeployModel", "Deployments"]
        let serviceConfig = requestTimeout.map { timeout in
            ServiceConfig(methodConfig: [MethodConfig(names: oneAnswer.map { .init(service: "fedgate.v1.Broker", method: $0) }, timeout: timeout)])
        } ?? ServiceConfig()
        return try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port),
            transportSecurity: .mTLS(
                certificateChain: [.bytes(Array(credentials.certificatePEM.utf8), format: .pem)],
                privateKey: .bytes(Array(credentials.keyPEM.utf8), format: .pem)
            ) {
                $0.trustRoots = .certificates([.bytes(Array(credentials.caPEM.utf8), format: .pem)])
                $0.serverCertificateVerification = .fullVerification
            },
            config: .defaults {
                // SNI and the name checked in the broker's certificate.
                $0.http2.authority = serverName
                $0.http2.targetWindowSize = 8 << 20
                $0.http2.maxFrameSize = 1 << 20
                $0.backoff = .init(initial: .milliseconds(200), max: .seconds(10), multiplier: 1.6, jitter: 0.2)
                $0.connection.keepalive = .init(time: limits.keepalive, timeout: limits.keepaliveTimeout, allowWithoutCalls: true)
            },
            serviceConfig: serviceConfig)
    }
}

extension ServerContext {
    /// The identity in the verified client certificate of this call; the only source of identity.
    public var callerIdentity: Identity {
        get throws {
            guard let posix = transportSpecific as? HTTP2ServerTransport.Posix.Context, let certificate = posix.peerCertificate else {
                throw RPCError(code: .unauthenticated, message: "no verified client certificate on this connection")
            }
            do { return try Identity(subject: certificate.subject) } catch {
                throw RPCError(code: .unauthenticated, message: "the client certificate carries no FedGate identity: \(error)")
            }
        }
    }
}
