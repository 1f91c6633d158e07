import FedGatePKI
import FedGateProto
import FedGateRounds
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore

/// The deployment calls: an admin's `DeployModel`, anyone's `Deployments` view, and a silo's
/// download of a registry version a deployment sent it.
extension BrokerService {
    public func deployModel(request: Fedgate_V1_DeployModelRequest, context: ServerContext) async throws -> Fedgate_V1_DeploymentsResponse {
        let admin = try context.callerIdentity.id
        guard let stage = Rollout.Stage(rawValue: request.stage) else {
            throw RPCError(code: .invalidArgument, message: "stage '\(PeerText.bounded(request.stage, limit: 32))' is not canary or all")
        }
        guard request.silos.count <= 10_000, request.watch.count <= 1_000 else { throw RPCError(code: .invalidArgument, message: "too many silos or watched columns") }
        let ask = BrokerCoordinator.DeployRequest(version: Int(request.version), stage: stage, silos: PeerText.bounded(request.silos, count: 10_000, limit: 128),
                                                  maxPSI: request.maxPsi == 0 ? nil : request.maxPsi,
                                                  minAccuracy: request.hasMinAccuracy ? request.minAccuracy : nil, watch: PeerText.bounded(request.watch, count: 1_000, limit: 128))
        _ = try await coordinator.deploy(ask, by: admin)
        return Self.deploymentsResponse(await coordinator.deployments)
    }

    public func deployments(request: Fedgate_V1_DeploymentsRequest, context: ServerContext) async throws -> Fedgate_V1_DeploymentsResponse {
        Self.deploymentsResponse(await coordinator.deployments)
    }

    static func deploymentsResponse(_ rollout: Rollout) -> Fedgate_V1_DeploymentsResponse {
        var response = Fedgate_V1_DeploymentsResponse()
        response.running = rollout.running.mapValues { UInt32($0) }
        response.deployments = rollout.deployments.map { d in
            var out = Fedgate_V1_DeploymentInfo()
            (out.id, out.version, out.stage, out.silos, out.state, out.by) = (UInt32(d.id), UInt32(d.version), d.stage.rawValue, d.silos, d.state.rawValue, d.by)
            out.startedAtMs = Int64(d.startedAt.timeIntervalSince1970 * 1000)
            (out.maxPsi, out.minAccuracy, out.watch) = (d.gate.maxPSI, d.gate.minAccuracy ?? 0, d.gate.watch)
            (out.installed, out.problems) = (d.installed.sorted(), d.problems)
            out.checks = d.checks.map { c in
                var m = Fedgate_V1_MonitorCheck()
                (m.silo, m.version, m.atMs, m.rows) = (c.silo, UInt32(c.version), Int64(c.at.timeIntervalSince1970 * 1000), c.rows)
                (m.accuracy, m.psi, m.pValue, m.reasons) = (c.accuracy ?? -1, c.drift.mapValues(\.psi), c.drift.mapValues(\.pValue), c.reasons)
                return m
            }
            if let alert = d.alert { (out.alertSilo, out.alertReasons) = (alert.silo, alert.reasons) }
            out.rollbackSeconds = d.rollbackSeconds ?? 0
            out.promotionBlockers = d.stage == .canary ? d.promotionBlockers : []
            return out
        }
        return response
    }

    /// A registry version a deployment sent the calling silo, as ranges.
    func downloadDeployed(_ request: Fedgate_V1_ModelRequest, silo: String, response: RPCWriter<Fedgate_V1_TransferChunk>) async throws {
        guard await coordinator.mayDownload(silo, version: Int(request.version)) else {
            throw await refuse(silo, .modelDownload, .permissionDenied, "no deployment sent version \(request.version) to \(silo)")
        }
        _ = try await writeVersion(Int(request.version), offset: request.offset, length: request.length, to: response)
    }
}
