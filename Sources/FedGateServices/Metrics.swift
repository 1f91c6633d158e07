import FedGatePKI
import FedGatePolicy
import FedGateTransport
import FedGateRounds
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import X509

/// A broker's or gateway's counters, gauges and timers, in a Prometheus registry of its own (so
/// several parties in one process, as in the tests, keep theirs apart). Labels carry rules,
/// outcomes, reasons, silos and data sets: never keys, tokens or update values.
public struct FedGateMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [.milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                                   .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300)]
        self.factory = factory
    }

    public func count(_ name: String, _ labels: [(String, String)] = [], by n: Int = 1) {
        Counter(label: name, dimensions: labels, factory: factory).increment(by: n)
    }

    public func set(_ name: String, _ value: Double) { set(name, [], value) }

    public func set(_ name: String, _ labels: [(String, String)], _ value: Double) {
        Gauge(label: name, dimensions: labels, factory: factory).record(value)
    }

    public func time(_ name: String, _ labels: [(String, String)] = [], _ duration: Duration) {
        Timer(label: name, dimensions: labels, factory: factory).record(duration: duration)
    }

    /// The exposition text (Prometheus format 0.0.4).
    public var text: String { Self.withHelp(registry.emitToString()) }

    /// The rules a refusal may name: the policy engine's, and the gateway's own checks before it.
    static let knownRules = Set(PolicyEngine.rules.map(\.name) + ["plan", "datasets", "columns", "approval", "broker", "statistics", "schema", "quota", "concurrency"])

    /// The rule a refusal reason names (`purpose: …` → `purpose`), for a bounded label: a reason
    /// that names no known rule counts as `other`, so a peer's text cannot mint new label values.
    static func rule(of reason: String) -> String {
        label(rule: String(reason.prefix { $0 != ":" && $0 != " " }))
    }

    /// A rule's name as a label: a known rule, or `other`.
    static func label(rule: String) -> String { knownRules.contains(rule) ? rule : "other" }
}

/// `/metrics` over HTTPS with TLS 1.3 and a client certificate from the consortium CA whose role
/// is `monitor` or `admin`; any other path, method or role is refused.
public enum MetricsEndpoint {
    public struct Handle: Sendable {
        public let port: Int
        let channel: any Channel
        public func close() async { try? await channel.close() }
    }

    /// `revocation`: why a presented certificate is revoked, or nil (the broker passes its store's
    /// revocations: a revoked monitor or admin certificate reads no metrics).
    public static func serve(host: String, port: Int, credentials: TLSCredentials, metrics: FedGateMetrics,
                             revocation: @escaping @Sendable (Certificate) -> String? = { _ in nil }, logger: Logger) async throws -> Handle {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(credentials.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(credentials.keyPEM.utf8), format: .pem)))
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(credentials.caPEM.utf8)))
        tls.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(metrics: metrics, revocation: revocation, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        guard let bound = channel.localAddress?.port else { throw ServiceSetupError.noListeningPort(listener: "metrics") }
        logger.info("metrics listening", metadata: ["address": "\(host):\(bound)"])
        return Handle(port: bound, channel: channel)
    }
}

private final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let metrics: FedGateMetrics
    let revocation: @Sendable (Certificate) -> String?
    let logger: Logger
    private var head: HTTPRequestHead?

    init(metrics: FedGateMetrics, revocation: @escaping @Sendable (Certificate) -> String?, logger: Logger) {
        self.metrics = metrics
        self.revocation = revocation
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break  // a scrape has no body; anything sent is ignored
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context, to: head)
        }
    }

    private func respond(_ context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let (status, body): (HTTPResponseStatus, String)
        if head.method != .GET || head.uri.split(separator: "?").first != "/metrics" {
            (status, body) = (.notFound, "only GET /metrics is served here\n")
        } else {
            switch caller(context) {
            case .success(let identity) where identity.role == .monitor || identity.role == .admin:
                (status, body) = (.ok, metrics.text)
            case .success(let identity):
                logger.warning("metrics refused", metadata: ["peer": "\(identity.id)", "role": "\(identity.role.rawValue)"])
                (status, body) = (.forbidden, "a \(identity.role.rawValue) certificate may not read metrics; use a monitor or admin certificate\n")
            case .failure(let reason):
                (status, body) = (.forbidden, "\(reason)\n")
            }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let channel = context.channel
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    private struct Refusal: Error, CustomStringConvertible { let description: String }

    /// The identity in the verified client certificate (the TLS handshake already checked its chain).
    private func caller(_ context: ChannelHandlerContext) -> Result<Identity, Refusal> {
        guard let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
              let peer = handler.peerCertificate, let der = try? peer.toDERBytes(),
              let certificate = try? Certificate(derEncoded: der) else {
            return .failure(Refusal(description: "no verified client certificate on this connection"))
        }
        if let reason = revocation(certificate) {
            logger.warning("metrics refused", metadata: ["reason": "\(reason)"])
            return .failure(Refusal(description: reason))
        }
        do { return .success(try Identity(subject: certificate.subject)) } catch {
            return .failure(Refusal(description: "the client certificate carries no FedGate identity"))
        }
    }
}
