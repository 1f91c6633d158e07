import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import X509

/// The broker's RPCs: thin handlers that take the caller's identity from its certificate (the
/// interceptor has already checked its role) and hand over to the coordinator.
public struct BrokerService: Fedgate_V1_Broker.SimpleServiceProtocol {
    let coordinator: BrokerCoordinator
    let store: any AuditLog & ModelRegistry
    let limits: TransportLimits
    let issuer: CertificateIssuer?
    let uploads: AsyncGate
    let pulled = PulledModelCache()
    let refusals = RefusalThrottle<String>()
    let logger: Logger

    public init(coordinator: BrokerCoordinator, store: any AuditLog & ModelRegistry, limits: TransportLimits = .init(), issuer: CertificateIssuer? = nil,
                logger: Logger) {
        self.coordinator = coordinator
        self.store = store
        self.limits = limits
        self.issuer = issuer
        self.logger = logger
        uploads = AsyncGate(limit: limits.concurrentUploads)
    }

    /// A handler's refusal of an authenticated caller: logged, audited (at most once per kind and
    /// caller an interval, with a count) and answered with its reason.
    func refuse(_ caller: String, _ kind: AuditEvent.Refusal.Kind, _ code: RPCError.Code, _ reason: String,
                _ details: AuditEvent.Refusal = .init(reason: "")) async -> RPCError {
        let reason = PeerText.bounded(reason, limit: 400)
        logger.warning("call refused", metadata: ["identity": "\(caller)", "action": "\(kind.rawValue)", "reason": "\(reason)"])
        if let report = refusals.admit(reason, source: caller, kind: "\(kind.rawValue)|\(reason.prefix(60))") {
            var refusal = details
            refusal.reason = report.sample
            refusal.count = report.count
            try? await store.audit(.refused(kind, refusal), actor: caller, subject: caller, at: Date())
        }
        return RPCError(code: code, message: reason)
    }

    public func renew(request: Fedgate_V1_RenewRequest, context: ServerContext) async throws -> Fedgate_V1_RenewResponse {
        let identity = try context.callerIdentity
        guard let issuer else {
            throw RPCError(code: .unimplemented, message: "this broker issues no certificates; ask the consortium operator to renew yours")
        }
        let refused = AuditEvent.Refusal.Kind.renewal
        guard request.csrPem.utf8.count <= 16 << 10 else {
            throw await refuse(identity.id, refused, .invalidArgument, "csr_pem has \(request.csrPem.utf8.count) bytes; a CSR has a few hundred")
        }
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: request.csrPem) } catch {
            throw await refuse(identity.id, refused, .invalidArgument, "csr_pem is not a PEM certificate signing request: \(error)")
        }
        let asked: Identity
        do { asked = try Identity(subject: csr.subject) } catch { throw await refuse(identity.id, refused, .invalidArgument, "the CSR: \(error)") }
        guard asked == identity else {
            throw await refuse(identity.id, refused, .permissionDenied, "\(identity) asked for a certificate as \(asked): a party renews only its own identity",
                               .init(reason: "", asked: asked.description))
        }
        let certificate: Certificate
        do { certificate = try issuer.authority.issue(csr, days: issuer.days) } catch let e as PKIError {
            throw await refuse(identity.id, refused, .invalidArgument, e.description)
        }
        try await store.audit(.certificateRenewed(.init(notAfter: certificate.notValidAfter, sha256: try certificate.sha256Fingerprint)),
                              actor: identity.id, subject: identity.id, at: Date())
        logger.info("certificate renewed", metadata: ["identity": "\(identity)", "not_after": "\(certificate.notValidAfter)"])
        var response = Fedgate_V1_RenewResponse()
        response.certificatePem = try issuer.authority.chainPEM(certificate)
        return response
    }

    public func whoAmI(request: Fedgate_V1_WhoAmIRequest, context: ServerContext) async throws -> Fedgate_V1_WhoAmIResponse {
        let identity = try context.callerIdentity
        var response = Fedgate_V1_WhoAmIResponse()
        response.id = identity.id
        response.role = identity.role.rawValue
        response.region = identity.region ?? ""
        if let posix = context.transportSpecific as? HTTP2ServerTransport.Posix.Context, let cert = posix.peerCertificate {
            response.certificateNotAfterMs = Int64(cert.notValidAfter.timeIntervalSince1970 * 1000)
        }
        response.brokerTimeMs = Int64(Date().timeIntervalSince1970 * 1000)
        return response
    }

    /// How a refusal for the gateway's software begins (the gateway stops on it instead of retrying).
    public static let versionRefusal = "software version refused: "

    public func connect(request: RPCAsyncSequence<Fedgate_V1_GatewayMessage, any Error>,
                        response: RPCWriter<Fedgate_V1_BrokerMessage>, context: ServerContext) async throws {
        let silo = try context.callerIdentity.id
        let notAfter = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate?.notValidAfter
        let (outbox, continuation) = AsyncStream.makeStream(of: Fedgate_V1_BrokerMessage.self)
        let coordinator = self.coordinator
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outbox { try await response.write(message) }
            }
            group.addTask {
                var token: UInt64?
                do {
                    for try await message in request {
                        guard let t = token else {
                            guard case .hello(let hello)? = message.kind else {
                                throw RPCError(code: .failedPrecondition, message: "open the Connect stream with a Hello")
                            }
                            let peer = SoftwareIdentity(version: PeerText.bounded(hello.softwareVersion, limit: 64),
                                                        sha256: PeerText.bounded(hello.binarySha256, limit: 64))
                            if let reason = coordinator.settings.gatewayPins.refusal(of: peer, who: "gateway \(silo)", ours: .running) {
                                try? await store.audit(.refused(.connection, .init(reason: reason)), actor: silo, subject: silo, at: Date())
                                throw RPCError(code: .failedPrecondition, message: Self.versionRefusal + reason)
                            }
                            token = await coordinator.open(silo: silo, datasets: hello.datasets, certificateNotAfter: notAfter, outbox: continuation)
                            continue
                        }
                        switch message.kind {
                        case .heartbeat: await coordinator.heartbeat(silo: silo, token: t)
                        case .offerReply(let reply): await coordinator.reply(reply, from: silo, token: t)
                        case .evaluation(let report): await coordinator.evaluation(report, from: silo, token: t)
                        case .secagg(let step): await coordinator.secagg(step, from: silo, token: t)
                        case .auditHead(let head): await coordinator.witness(head, from: silo, token: t)
                        case .deployed(let answer): await coordinator.deployed(answer, from: silo, token: t)
                        case .monitor(let report): await coordinator.monitored(report, from: silo, token: t)
                        case .hello, nil: throw RPCError(code: .invalidArgument, message: "only one Hello per stream")
                        }
                    }
                } catch {
                    if let token { await coordinator.close(silo: silo, token: token) }
                    continuation.finish()
                    throw error
                }
                if let token { await coordinator.close(silo: silo, token: token) }
                continuation.finish()
            }
            // Either side ending ends the stream.
            try await group.next()
            group.cancelAll()
        }
    }

    public func downloadModel(request: Fedgate_V1_ModelRequest, response: RPCWriter<Fedgate_V1_TransferChunk>,
                              context: ServerContext) async throws {
        let silo = try context.callerIdentity.id
        if request.version != 0 { return try await downloadDeployed(request, silo: silo, response: response) }
        let model: ModelFile
        do { model = try await coordinator.model(for: silo, plan: request.planHash, round: Int(request.round)) } catch {
            throw await refuse(silo, .modelDownload, .permissionDenied, "\(error)",
                               .init(reason: "", plan: PeerText.bounded(request.planHash, limit: 64), round: Int(request.round)))
        }
        let range = try Self.requested(offset: request.offset, length: request.length, of: model.bytes, what: "the model")
        // Each chunk is cut from the model's floats as it is written: the broker keeps no second
        // copy of the model for downloads, and a silo that asks for ranges has at most one queued.
        try await Self.write(range, of: model.bytes, chunks: model.chunks(in: range), sha256: model.sha256,
                             header: TransferHeader(planHash: request.planHash, round: Int(request.round), totalBytes: model.bytes), to: response)
        HeapRelease.after(transferOf: range.count)
    }

    /// The bytes a ranged request asks for (length 0: to the end), or why it is out of range.
    static func requested(offset: UInt64, length: UInt64, of total: Int, what: String) throws -> Range<Int> {
        let start = Int(clamping: offset)
        guard start < total || start == 0 else { throw RPCError(code: .outOfRange, message: "offset \(offset) is past \(what)'s \(total) bytes") }
        return start..<(length == 0 ? total : min(total, start + Int(clamping: min(length, UInt64(Int.max / 2)))))
    }

    /// A range of a file as transfer chunks: the header on the chunk that starts the file, its SHA-256
    /// on the one that ends it, so a client joins ranges with one assembler.
    static func write(_ range: Range<Int>, of total: Int, chunks: some Collection<Data>, sha256: String, header: TransferHeader,
                      to response: RPCWriter<Fedgate_V1_TransferChunk>) async throws {
        for chunk in transferMessages(range.lowerBound == 0 ? header : nil, chunks: chunks, sha256: range.upperBound == total ? sha256 : nil) {
            try await response.write(chunk)
        }
    }

    public func uploadUpdate(request: RPCAsyncSequence<Fedgate_V1_TransferChunk, any Error>,
                             context: ServerContext) async throws -> Fedgate_V1_UploadReceipt {
        let silo = try context.callerIdentity.id
        var receipt = Fedgate_V1_UploadReceipt()
        await uploads.enter()
        defer { Task { await uploads.leave() } }
        let (maximum, timeout) = (limits.maximumPayloadBytes, limits.uploadTimeout)
        do {
            // A silo that starts an upload and stalls must not hold a slot: the whole upload has a time limit.
            let received = try await withThrowingTaskGroup(of: (header: TransferHeader, payload: [UInt8])?.self) { group in
                group.addTask {
                    var assembler = TransferAssembler(maximumBytes: maximum, what: "update from \(silo)")
                    for try await chunk in request {
                        try assembler.add(chunk)
                    }
                    return try assembler.finish()
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first
            }
            guard let (header, payload) = received else {
                throw TransferError("update from \(silo): not complete within \(timeout); the upload was cut off")
            }
            try await coordinator.upload(from: silo, header: header, payload: payload)
            receipt.accepted = true
            HeapRelease.after(transferOf: header.totalBytes)
        } catch let error as TransferError {
            // The transfer itself failed (cut off, too large, checksum): audited here as
            // `update.refuse`. What the coordinator refuses it audits itself (`update.reject`).
            receipt.reason = error.description
            logger.warning("update refused", metadata: ["silo": "\(silo)", "reason": "\(receipt.reason)"])
            try await store.audit(.refused(.upload, .init(reason: receipt.reason)), actor: "broker", subject: silo, at: Date())
        } catch let error as UpdateRefused {
            receipt.reason = error.description
        } catch let error as RoundRefusal {
            receipt.reason = error.description
        } catch let error as BrokerError {
            receipt.reason = error.description
        }
        return receipt
    }
}

/// The consortium CA, when the broker signs certificates itself, and how long they live.
public struct CertificateIssuer: Sendable {
    public let authority: ConsortiumCA
    public let days: Int
    public init(authority: ConsortiumCA, days: Int) {
        self.authority = authority
        self.days = days
    }
}

/// The last model file pulled from the registry, so a client pulling it range by range does not
/// make the store read the whole file again for every range.
actor PulledModelCache {
    private var last: (sha256: String, bytes: [UInt8])?

    func content(_ sha256: String, from store: any ModelRegistry) async throws -> [UInt8]? {
        if let last, last.sha256 == sha256 { return last.bytes }
        guard let bytes = try await store.modelContent(sha256: sha256) else { return nil }
        last = (sha256, bytes)
        return bytes
    }
}

/// At most `limit` holders at once; the others wait in order.
actor AsyncGate {
    private let limit: Int
    private var holders = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = max(1, limit) }

    func enter() async {
        if holders < limit { holders += 1; return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func leave() {
        if waiting.isEmpty { holders -= 1 } else { waiting.removeFirst().resume() }
    }
}
