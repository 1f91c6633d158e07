import FedGateLearning
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

/// The calls of people (data scientists, admins, compliance officers): plans, the model registry and
/// the audit trail. Each role may call only what `BrokerAuthorization` allows it.
extension BrokerService {
    public func submitPlan(request: Fedgate_V1_SubmitPlanRequest, context: ServerContext) async throws -> Fedgate_V1_SubmitPlanResponse {
        let identity = try context.callerIdentity
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(request.planYaml, file: "submitted plan") } catch {
            throw RPCError(code: .invalidArgument, message: "\(error)")
        }
        var response = Fedgate_V1_SubmitPlanResponse()
        response.planHash = try await coordinator.submit(plan, text: request.planYaml, by: identity.id)
        return response
    }

    public func planStatus(request: Fedgate_V1_PlanStatusRequest, context: ServerContext) async throws -> Fedgate_V1_PlanStatusResponse {
        guard let status = await coordinator.status(request.planHash) else {
            throw RPCError(code: .notFound, message: "no plan \(request.planHash) at this broker")
        }
        return Self.response(request.planHash, status)
    }

    public func cancelPlan(request: Fedgate_V1_CancelPlanRequest, context: ServerContext) async throws -> Fedgate_V1_PlanStatusResponse {
        let person = try context.callerIdentity.id
        return Self.response(request.planHash, try await coordinator.cancel(request.planHash, by: person))
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
            s.flags = r.flagged.map(\.proto)
            (s.bytesIn, s.rawBytes) = (UInt64(r.bytesIn), UInt64(r.rawBytes))
            s.sampled = r.sampled
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
                if let rmse = s.rmse { (out.rmse, out.mae, out.r2) = (rmse, s.mae ?? 0, s.r2 ?? 0) }
                out.slices = s.slices.map(\.proto)
                return out
            }
            response.slices = e.pooledSlices.sorted { $0.key < $1.key }.map { SliceFigure(slice: $0.key, accuracy: $0.value.accuracy, examples: $0.value.examples).proto }
            response.sliceGap = e.sliceGap ?? 0
            if e.isRegression {
                (response.rmse, response.r2) = (e.pooledRMSE ?? 0, e.meanR2 ?? 0)
            } else {
                response.accuracy = e.pooledAccuracy ?? 0
                response.fairnessDelta = e.fairnessDelta ?? 0
            }
        }
        response.gatePassed = status.gate?.passed ?? false
        response.gateReasons = status.gate?.reasons ?? []
        response.modelVersion = UInt32(status.modelVersion ?? 0)
        response.epsilonMirror = status.epsilonMirror
        response.alerts = status.alerts.map(\.proto)
        if let (silos, columns, result) = status.analytics { response.statistics = result.proto(columns: columns, silos: silos) }
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
        let (version, range) = try await writeVersion(Int(request.version), offset: request.offset, length: request.length, to: response)
        try await store.audit(.modelPulled(.init(offset: range.lowerBound, bytes: range.count)), actor: try context.callerIdentity.id,
                              subject: "\(version.version)", at: Date())
    }

    /// A registry version's file, or a byte range of it, as transfer chunks (the file read once per
    /// version by `pulled`, each chunk cut from it as it is written).
    func writeVersion(_ number: Int, offset: UInt64, length: UInt64, to response: RPCWriter<Fedgate_V1_TransferChunk>) async throws
        -> (ModelVersion, Range<Int>) {
        guard let version = try await store.modelVersions().first(where: { $0.version == number }) else {
            throw RPCError(code: .notFound, message: "no model version \(number) in the registry")
        }
        guard let content = try await pulled.content(version.contentSHA256, from: store) else {
            throw RPCError(code: .dataLoss, message: "version \(number)'s file (SHA-256 \(version.contentSHA256.prefix(12))…) is missing from the store")
        }
        let range = try Self.requested(offset: offset, length: length, of: content.count, what: "the file")
        let chunks = chunkRanges(total: range.count, chunkBytes: limits.chunkBytes).lazy.map {
            Data(content[(range.lowerBound + $0.lowerBound)..<(range.lowerBound + $0.upperBound)])
        }
        try await Self.write(range, of: content.count, chunks: chunks, sha256: version.contentSHA256,
                             header: TransferHeader(planHash: version.planHash, round: version.round, totalBytes: content.count), to: response)
        return (version, range)
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
        try await store.audit(.modelRolledBack(.init(from: versions.last?.version ?? 0, to: target.version)), actor: admin,
                              subject: "\(target.version)", at: Date())
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
            out.subject = r.subject
            out.previousHash = r.previousHash
            out.at = r.at.timeIntervalSince1970
            try await response.write(out)
        }
    }
}
