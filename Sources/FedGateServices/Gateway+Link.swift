import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// The link to the broker: one session at a time (connect, welcome deadline, the task stream and
/// its heartbeats), certificate renewal, and witnessing the broker's audit heads.
extension Gateway {
    /// One session with the broker at `host:port`, abandoned if no welcome arrives within
    /// `settings.welcomeTimeout` of this gateway's own awake time (keepalive watches the connection
    /// once it is up). In wall time, a gateway starved of CPU woke to its timer and the welcome
    /// queued behind it at once, and left a broker that had answered (seen on a loaded CI machine:
    /// every gateway of the process gave up at the same instant, mid-round).
    func session(host: String, port: Int) async throws {
        let before = activity.sessions
        let timeout = settings.welcomeTimeout
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.openSession(host: host, port: port)
                return true
            }
            group.addTask {
                let tick = min(.milliseconds(250), timeout / 4)
                var clock = AwakeClock(tick: tick, at: .now)
                while clock.advance(at: .now) < timeout {
                    try await Task.sleep(for: min(tick, timeout - clock.elapsed(at: .now)))
                }
                // A welcome that arrived with the last tick is taken in before judging.
                await Task.yield()
                if await self.activity.sessions == before {
                    throw GatewayError.noWelcome(broker: "\(host):\(port)", within: timeout)
                }
                return false
            }
            // The session's end ends the watch; a watch that finds the session welcomed just ends.
            for try await sessionEnded in group where sessionEnded {
                group.cancelAll()
                return
            }
        }
    }

    func openSession(host: String, port: Int) async throws {
        let transport = try FedGateTransports.client(host: host, port: port, serverName: settings.brokerName,
                                                     credentials: credentials, limits: settings.limits)
        try await withGRPCClient(transport: transport, interceptors: settings.outgoing.map { [OutgoingMessages(told: $0)] } ?? []) { client in
            let broker = Fedgate_V1_Broker.Client(wrapping: client)
            let (outbox, continuation) = AsyncStream.makeStream(of: Fedgate_V1_GatewayMessage.self)
            var hello = Fedgate_V1_GatewayMessage()
            hello.hello.datasets = [settings.dataset]
            hello.hello.softwareVersion = SoftwareIdentity.running.version
            hello.hello.binarySha256 = SoftwareIdentity.running.sha256
            continuation.yield(hello)
            defer { continuation.finish() }
            let request = StreamingClientRequest<Fedgate_V1_GatewayMessage> { writer in
                for await message in outbox { try await writer.write(message) }
            }
            try await broker.connect(request: request) { response in
                var heartbeat: Task<Void, Never>?
                defer { heartbeat?.cancel() }
                for try await message in response.messages {
                    switch message.kind {
                    case .welcome(let welcome):
                        guard let beating = try await self.welcomed(welcome, address: "\(host):\(port)", broker: broker, reply: continuation) else { return }
                        heartbeat = beating
                    case .offer(let offer):
                        var reply = Fedgate_V1_GatewayMessage()
                        reply.offerReply = await self.answer(offer)
                        continuation.yield(reply)
                    case .task(let task):
                        await self.startTraining(task, broker: broker, reply: continuation)
                    case .outcome(let outcome):
                        await self.settle(outcome)
                    case .evaluate(let task):
                        await self.startEvaluation(task, broker: broker, reply: continuation)
                    case .secagg(let step):
                        await self.secureStep(step, broker: broker, reply: continuation)
                    case .auditHead(let head):
                        await self.witnessBroker(head, reply: continuation)
                    case .planEnded(let ended):
                        await self.planEnded(ended)
                    case .deploy(let task):
                        await self.deploy(task, broker: broker, reply: continuation)
                    case nil:
                        continue
                    }
                }
            }
        }
    }

    /// The broker's welcome: its software checked against the policy's pins, the connection noted,
    /// a certificate renewal made when due, and the heartbeat started (returned). nil: a renewed
    /// certificate takes effect on the next connection, so this stream ends (no round of ours is in
    /// flight right after the welcome) and the gateway reconnects at once.
    func welcomed(_ welcome: Fedgate_V1_Welcome, address: String, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                  reply continuation: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) async throws -> Task<Void, Never>? {
        try await checkPins(welcome, broker: address)
        connected(to: address, outbox: continuation)
        do {
            if try await renewIfDue(broker) { markRenewed(); return nil }
        } catch {
            renewalFailed(error)
        }
        let interval = Duration.milliseconds(max(100, Int(welcome.heartbeatIntervalMs)))
        return Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                var beat = Fedgate_V1_GatewayMessage()
                beat.heartbeat.sentAtMs = Int64(Date().timeIntervalSince1970 * 1000)
                continuation.yield(beat)
            }
        }
    }

    /// The broker's signed head: kept as a witness of its trail if it is the broker's and genuine;
    /// answered with this silo's own signed head (released without DP: a sequence number and the
    /// hash of the silo's audit chain).
    func witnessBroker(_ message: Fedgate_V1_SignedAuditHead, reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) async {
        if let head = message.auditHead {
            if let refusal = await AuditHeadCheck.keep(head, from: settings.brokerName, caPEM: credentials.caPEM, in: governor.ledger.backend, logger: logger) {
                logger.warning("the broker's audit head was refused", metadata: ["silo": "\(siloID)", "reason": "\(refusal)"])
            }
        }
        do {
            guard let mine = try await auditHeads?.current() else { return }
            var answer = Fedgate_V1_GatewayMessage()
            answer.auditHead = Fedgate_V1_SignedAuditHead(mine)
            reply.yield(answer)
        } catch {
            logger.warning("could not sign the audit head for the broker", metadata: ["silo": "\(siloID)", "error": "\(error)"])
        }
    }

    /// Renews the certificate when it is close to expiry: a fresh key and CSR, signed by the broker
    /// over the current mutual-TLS connection; the new pair is written to disk key first.
    func renewIfDue(_ broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> Bool {
        guard let renewBefore = settings.renewBefore else { return false }
        let left = credentials.notAfter.timeIntervalSinceNow
        guard left < Double(renewBefore.components.seconds) else { return false }
        let request = try EnrollmentRequest(identity: credentials.identity)
        var renew = Fedgate_V1_RenewRequest()
        renew.csrPem = try request.csrPEM
        let response = try await broker.renew(renew)
        let renewed = try TLSCredentials(certificatePEM: response.certificatePem, keyPEM: request.keyPEM, caPEM: credentials.caPEM)
        guard renewed.identity == credentials.identity, renewed.notAfter > credentials.notAfter else {
            throw GatewayError.renewalMismatch(identity: "\(renewed.identity)", notAfter: renewed.notAfter)
        }
        if let keyFile = settings.keyFile, let certificateFile = settings.certificateFile {
            try writeSecret(renewed.keyPEM, to: keyFile)
            try renewed.certificatePEM.write(to: certificateFile, atomically: true, encoding: .utf8)
        }
        logger.notice("certificate renewed; reconnecting with it", metadata: [
            "silo": "\(siloID)", "old_not_after": "\(credentials.notAfter)", "new_not_after": "\(renewed.notAfter)"])
        credentials = renewed
        metrics.certificateRenewed(notAfter: renewed.notAfter)
        return true
    }

    func markRenewed() { renewedJustNow = true }

    func renewalFailed(_ error: any Error) {
        logger.warning("certificate renewal failed; the current certificate stays in use", metadata: [
            "silo": "\(siloID)", "not_after": "\(credentials.notAfter)", "error": "\(error)"])
    }

    func connected(to address: String, outbox: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        activity.sessions += 1
        brokerOutbox = outbox
        logger.info("connected to the broker", metadata: ["silo": "\(siloID)", "broker": "\(settings.brokerName)", "address": "\(address)"])
        settings.onConnected?(address)
    }

    /// The broker's software against this silo's policy pins: refused (audited in the silo's trail,
    /// the session ended, the gateway stopping) when the pins do not accept it.
    func checkPins(_ welcome: Fedgate_V1_Welcome, broker: String) async throws {
        let software = SoftwareIdentity(version: welcome.softwareVersion, sha256: welcome.binarySha256)
        guard let reason = settings.brokerPins.refusal(of: software, who: "the broker at \(broker)", ours: .running) else { return }
        try? await governor.ledger.backend.audit(.refused(.connection, .init(reason: reason)), actor: siloID, subject: "broker \(broker)", at: Date())
        throw GatewayError.versionRefused(reason: reason)
    }
}

/// Tests only (`Gateway.Settings.outgoing`): tells a closure every message the gateway writes on
/// any call, before it is written.
struct OutgoingMessages: ClientInterceptor {
    let told: @Sendable (any Sendable) -> Void

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        let (produce, told) = (request.producer, told)
        request.producer = { writer in try await produce(RPCWriter(wrapping: Telling(writer: writer, told: told))) }
        return try await next(request, context)
    }

    struct Telling<Element: Sendable>: RPCWriterProtocol {
        let writer: RPCWriter<Element>
        let told: @Sendable (any Sendable) -> Void

        func write(_ element: Element) async throws {
            told(element)
            try await writer.write(element)
        }

        func write(contentsOf elements: some Sequence<Element>) async throws {
            for element in elements { try await write(element) }
        }
    }
}
