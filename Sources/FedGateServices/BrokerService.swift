import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import X509

/// The broker's RPCs: thin handlers that take the caller's identity from its certificate (the
/// interceptor has already checked its role) and hand over to the coordinator.
public struct BrokerService: Fedgate_V1_Broker.SimpleServiceProtocol {
    let coordinator: BrokerCoordinator
    let store: any LedgerBackend
    let limits: TransportLimits
    let issuer: CertificateIssuer?
    let uploads: AsyncGate
    let logger: Logger

    public init(coordinator: BrokerCoordinator, store: any LedgerBackend, limits: TransportLimits = .init(), issuer: CertificateIssuer? = nil,
                logger: Logger) {
        self.coordinator = coordinator
        self.store = store
        self.limits = limits
        self.issuer = issuer
        self.logger = logger
        uploads = AsyncGate(limit: limits.concurrentUploads)
    }

    public func renew(request: Fedgate_V1_RenewRequest, context: ServerContext) async throws -> Fedgate_V1_RenewResponse {
        let identity = try context.callerIdentity
        guard let issuer else {
            throw RPCError(code: .unimplemented, message: "this broker issues no certificates; ask the consortium operator to renew yours")
        }
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: request.csrPem) } catch {
            throw RPCError(code: .invalidArgument, message: "csr_pem is not a PEM certificate signing request: \(error)")
        }
        let asked: Identity
        do { asked = try Identity(subject: csr.subject) } catch { throw RPCError(code: .invalidArgument, message: "the CSR: \(error)") }
        guard asked == identity else {
            throw RPCError(code: .permissionDenied, message: "\(identity) asked for a certificate as \(asked): a party renews only its own identity")
        }
        let certificate: Certificate
        do { certificate = try issuer.authority.issue(csr, days: issuer.days) } catch let e as PKIError {
            throw RPCError(code: .invalidArgument, message: e.description)
        }
        try await store.audit(actor: identity.id, action: "certificate.renew", subject: identity.id, payload: canonicalPayload([
            "not_after": certificate.notValidAfter.timeIntervalSince1970, "sha256": try certificate.sha256Fingerprint]), at: Date())
        logger.info("certificate renewed", metadata: ["identity": "\(identity)", "not_after": "\(certificate.notValidAfter)"])
        var response = Fedgate_V1_RenewResponse()
        response.certificatePem = try certificate.serializeAsPEM().pemString
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
        return response
    }

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
                            token = await coordinator.open(silo: silo, datasets: hello.datasets, certificateNotAfter: notAfter, outbox: continuation)
                            continue
                        }
                        switch message.kind {
                        case .heartbeat: await coordinator.heartbeat(silo: silo, token: t)
                        case .offerReply(let reply): await coordinator.reply(reply, from: silo, token: t)
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
        let model: ModelFile
        do { model = try await coordinator.model(for: silo, plan: request.planHash, round: Int(request.round)) } catch {
            throw RPCError(code: .permissionDenied, message: "\(error)")
        }
        let offset = Int(clamping: request.offset)
        guard offset < model.bytes || (offset == 0 && model.bytes == 0) else {
            throw RPCError(code: .outOfRange, message: "offset \(request.offset) is past the model's \(model.bytes) bytes")
        }
        let end = request.length == 0 ? model.bytes : min(model.bytes, offset + Int(clamping: min(request.length, UInt64(Int.max / 2))))
        let range = model.chunks(in: offset..<end)
        let header = TransferHeader(planHash: request.planHash, round: Int(request.round), totalBytes: model.bytes)
        // Each chunk is cut from the model's floats as it is written: the broker keeps no second
        // copy of the model for downloads, and a silo that asks for ranges has at most one queued.
        for chunk in transferMessages(offset == 0 ? header : nil, chunks: range, sha256: end == model.bytes ? model.sha256 : nil) {
            try await response.write(chunk)
        }
        HeapRelease.after(transferOf: end - offset)
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
            receipt.reason = error.description
        } catch let error as RoundError {
            receipt.reason = error.description
        } catch let error as SafeTensorsError {
            receipt.reason = "\(error)"
        }
        if !receipt.accepted {
            logger.warning("update refused", metadata: ["silo": "\(silo)", "reason": "\(receipt.reason)"])
            try await store.audit(actor: "broker", action: "update.refuse", subject: silo,
                                  payload: canonicalPayload(["reason": receipt.reason]), at: Date())
        }
        return receipt
    }

    public func submitPlan(request: Fedgate_V1_SubmitPlanRequest, context: ServerContext) async throws -> Fedgate_V1_SubmitPlanResponse {
        let identity = try context.callerIdentity
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(request.planYaml, file: "submitted plan") } catch {
            throw RPCError(code: .invalidArgument, message: "\(error)")
        }
        do {
            var response = Fedgate_V1_SubmitPlanResponse()
            response.planHash = try await coordinator.submit(plan, text: request.planYaml, by: identity.id)
            return response
        } catch let error as RoundError {
            throw RPCError(code: .alreadyExists, message: error.description)
        }
    }

    public func planStatus(request: Fedgate_V1_PlanStatusRequest, context: ServerContext) async throws -> Fedgate_V1_PlanStatusResponse {
        guard let status = await coordinator.status(request.planHash) else {
            throw RPCError(code: .notFound, message: "no plan \(request.planHash) at this broker")
        }
        var response = Fedgate_V1_PlanStatusResponse()
        response.planHash = request.planHash
        response.state = status.state.rawValue
        response.reason = status.reason ?? ""
        response.rounds = status.rounds.map { r in
            var s = Fedgate_V1_RoundStatus()
            s.round = UInt32(r.number)
            s.state = r.state
            s.participants = r.participants
            s.accuracy = r.reportedAccuracy ?? 0
            return s
        }
        return response
    }

    public func readAudit(request: Fedgate_V1_ReadAuditRequest, response: RPCWriter<Fedgate_V1_AuditRecord>,
                          context: ServerContext) async throws {
        let limit = request.limit == 0 ? 1000 : Int(min(request.limit, 10_000))
        let records = try await store.auditRecords().filter { $0.seq > Int(request.afterSequence) }.prefix(limit)
        for r in records {
            var out = Fedgate_V1_AuditRecord()
            out.sequence = UInt64(r.seq)
            out.atMs = Int64(r.at.timeIntervalSince1970 * 1000)
            out.actor = r.actor
            out.action = r.action
            out.detailJson = r.payload
            out.hash = r.hash
            try await response.write(out)
        }
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
