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
    let store: any LedgerBackend & RegistryBackend
    let limits: TransportLimits
    let issuer: CertificateIssuer?
    let uploads: AsyncGate
    let pulled = PulledModelCache()
    let refusals = RefusalThrottle<String>()
    let logger: Logger

    public init(coordinator: BrokerCoordinator, store: any LedgerBackend & RegistryBackend, limits: TransportLimits = .init(), issuer: CertificateIssuer? = nil,
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
    func refuse(_ caller: String, _ action: String, _ code: RPCError.Code, _ reason: String, _ fields: [String: Any] = [:]) async -> RPCError {
        let reason = PeerText.bounded(reason, limit: 400)
        logger.warning("call refused", metadata: ["identity": "\(caller)", "action": "\(action)", "reason": "\(reason)"])
        if let report = refusals.admit(reason, source: caller, kind: "\(action)|\(reason.prefix(60))") {
            var payload = fields
            payload["reason"] = report.sample
            payload["count"] = report.count
            try? await store.audit(actor: caller, action: action, subject: caller, payload: canonicalPayload(payload), at: Date())
        }
        return RPCError(code: code, message: reason)
    }

    public func renew(request: Fedgate_V1_RenewRequest, context: ServerContext) async throws -> Fedgate_V1_RenewResponse {
        let identity = try context.callerIdentity
        guard let issuer else {
            throw RPCError(code: .unimplemented, message: "this broker issues no certificates; ask the consortium operator to renew yours")
        }
        let refused = "certificate.renew.refuse"
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
                               ["asked": asked.description])
        }
        let certificate: Certificate
        do { certificate = try issuer.authority.issue(csr, days: issuer.days) } catch let e as PKIError {
            throw await refuse(identity.id, refused, .invalidArgument, e.description)
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
                        case .evaluation(let report): await coordinator.evaluation(report, from: silo, token: t)
                        case .secagg(let step): await coordinator.secagg(step, from: silo, token: t)
                        case .auditHead(let head): await coordinator.witness(head, from: silo, token: t)
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
            throw await refuse(silo, "model.download.refuse", .permissionDenied, "\(error)",
                               ["plan": PeerText.bounded(request.planHash, limit: 64), "round": Int(request.round)])
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
            try await store.audit(actor: "broker", action: "update.refuse", subject: silo,
                                  payload: canonicalPayload(["reason": receipt.reason]), at: Date())
        } catch let error as UpdateRefused {
            receipt.reason = error.description
        } catch let error as RoundError {
            receipt.reason = error.description
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
        } catch let error as PlanUnsupported {
            throw RPCError(code: .unimplemented, message: error.description)
        }
    }

    public func planStatus(request: Fedgate_V1_PlanStatusRequest, context: ServerContext) async throws -> Fedgate_V1_PlanStatusResponse {
        guard let status = await coordinator.status(request.planHash) else {
            throw RPCError(code: .notFound, message: "no plan \(request.planHash) at this broker")
        }
        return Self.response(request.planHash, status)
    }

    public func cancelPlan(request: Fedgate_V1_CancelPlanRequest, context: ServerContext) async throws -> Fedgate_V1_PlanStatusResponse {
        let person = try context.callerIdentity.id
        do {
            return Self.response(request.planHash, try await coordinator.cancel(request.planHash, by: person))
        } catch let error as RoundError {
            throw RPCError(code: .notFound, message: error.description)
        }
    }

    static func response(_ hash: String, _ status: BrokerCoordinator.PlanStatus) -> Fedgate_V1_PlanStatusResponse {
        var response = Fedgate_V1_PlanStatusResponse()
        response.planHash = hash
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
        if let e = status.evaluation {
            response.evaluations = e.silos.map { s in
                var out = Fedgate_V1_SiloEvaluation()
                out.silo = s.silo
                out.accuracy = s.accuracy
                out.examples = UInt64(s.examples)
                out.epsilonSpent = s.epsilonSpent
                out.epsilonCap = s.epsilonCap
                if let p = s.personalisedAccuracy {
                    out.personalised = true
                    out.personalisedAccuracy = p
                }
                return out
            }
            response.accuracy = e.pooledAccuracy ?? 0
            response.fairnessDelta = e.fairnessDelta ?? 0
        }
        response.gatePassed = status.gate?.passed ?? false
        response.gateReasons = status.gate?.reasons ?? []
        response.modelVersion = UInt32(status.modelVersion ?? 0)
        response.epsilonMirror = status.epsilonMirror
        response.bytesIn = UInt64(status.bytesIn)
        response.bytesOut = UInt64(status.bytesOut)
        response.refusals = status.refusals.sorted { $0.key < $1.key }.flatMap { silo, reasons in reasons.map { "\(silo): \($0)" } }
        if let c = status.current {
            response.currentRound = UInt32(c.round)
            response.currentPhase = c.phase
            response.accepted = c.accepted
        }
        return response
    }

    // MARK: Model registry

    public func listModels(request: Fedgate_V1_ListModelsRequest, context: ServerContext) async throws -> Fedgate_V1_ListModelsResponse {
        var response = Fedgate_V1_ListModelsResponse()
        response.versions = try await store.modelVersions().map(Self.info)
        return response
    }

    public func pullModel(request: Fedgate_V1_PullModelRequest, response: RPCWriter<Fedgate_V1_TransferChunk>,
                          context: ServerContext) async throws {
        guard let version = try await store.modelVersions().first(where: { $0.version == Int(request.version) }) else {
            throw RPCError(code: .notFound, message: "no model version \(request.version) in the registry")
        }
        guard let content = try await pulled.content(version.contentSHA256, from: store) else {
            throw RPCError(code: .dataLoss, message: "version \(request.version)'s file (SHA-256 \(version.contentSHA256.prefix(12))…) is missing from the store")
        }
        let range = try Self.requested(offset: request.offset, length: request.length, of: content.count, what: "the file")
        let chunks = chunkRanges(total: range.count, chunkBytes: limits.chunkBytes).lazy.map {
            Data(content[(range.lowerBound + $0.lowerBound)..<(range.lowerBound + $0.upperBound)])
        }
        try await Self.write(range, of: content.count, chunks: chunks, sha256: version.contentSHA256,
                             header: TransferHeader(planHash: version.planHash, round: version.round, totalBytes: content.count), to: response)
        try await store.audit(actor: try context.callerIdentity.id, action: "model.pull", subject: "\(version.version)",
                              payload: canonicalPayload(["offset": range.lowerBound, "bytes": range.count]), at: Date())
    }

    public func rollbackModel(request: Fedgate_V1_RollbackModelRequest, context: ServerContext) async throws -> Fedgate_V1_ModelVersionInfo {
        let admin = try context.callerIdentity.id
        let versions = try await store.modelVersions()
        guard let target = versions.first(where: { $0.version == Int(request.version) }) else {
            throw RPCError(code: .notFound, message: "no model version \(request.version) in the registry")
        }
        guard target.version != versions.last?.version else {
            throw RPCError(code: .failedPrecondition, message: "version \(request.version) is already the current one")
        }
        try await store.audit(actor: admin, action: "model.rollback", subject: "\(target.version)",
                              payload: canonicalPayload(["from": versions.last?.version ?? 0, "to": target.version]), at: Date())
        let version = try await store.addModelVersion(
            ModelVersion(version: 0, planHash: target.planHash, round: target.round, contentSHA256: target.contentSHA256,
                         participants: target.participants, epsilonPerSilo: target.epsilonPerSilo, metrics: target.metrics,
                         parent: target.version, createdAt: Date()), actor: admin)
        guard let made = try await store.modelVersions().first(where: { $0.version == version }) else {
            throw RPCError(code: .internalError, message: "version \(version) was recorded but cannot be read back")
        }
        return Self.info(made)
    }

    static func info(_ v: ModelVersion) -> Fedgate_V1_ModelVersionInfo {
        var out = Fedgate_V1_ModelVersionInfo()
        out.version = UInt32(v.version)
        out.planHash = v.planHash
        out.round = UInt32(v.round)
        out.contentSha256 = v.contentSHA256
        out.participants = v.participants
        out.epsilonPerSilo = v.epsilonPerSilo
        out.metrics = v.metrics
        out.parent = UInt32(v.parent ?? 0)
        out.createdAtMs = Int64(v.createdAt.timeIntervalSince1970 * 1000)
        return out
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

/// The last model file pulled from the registry, so a client pulling it range by range does not
/// make the store read the whole file again for every range.
actor PulledModelCache {
    private var last: (sha256: String, bytes: [UInt8])?

    func content(_ sha256: String, from store: any RegistryBackend) async throws -> [UInt8]? {
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
