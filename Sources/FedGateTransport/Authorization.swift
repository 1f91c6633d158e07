import FedGatePKI

/// What each role may call on the broker. Deny by default: a method not listed here, or a role not
/// listed for it, is refused before any handler runs.
public enum BrokerAuthorization {
    /// The broker's RPCs by their gRPC method name.
    public static let allowedRoles: [String: Set<Identity.Role>] = [
        "WhoAmI": Set(Identity.Role.allCases),
        "Renew": Set(Identity.Role.allCases),
        "Connect": [.silo],
        "DownloadModel": [.silo],
        "UploadUpdate": [.silo],
        "SubmitPlan": [.dataScientist],
        "PlanStatus": [.dataScientist, .complianceOfficer, .admin],
        "CancelPlan": [.dataScientist, .admin],
        "ReadAudit": [.complianceOfficer, .admin],
        "ListModels": [.dataScientist, .complianceOfficer, .admin],
        "PullModel": [.dataScientist, .admin],
        "RollbackModel": [.admin],
        "DeployModel": [.admin],
        "Deployments": [.dataScientist, .complianceOfficer, .admin],
    ]

    /// nil when `identity` may call `method`, else the reason it may not.
    public static func refusal(of identity: Identity, calling method: String) -> String? {
        guard let roles = allowedRoles[method] else {
            return "\(method) is not a FedGate broker method"
        }
        guard roles.contains(identity.role) else {
            let names = roles.map(\.rawValue).sorted().joined(separator: ", ")
            return "\(identity) may not call \(method): only \(names) may"
        }
        return nil
    }
}
