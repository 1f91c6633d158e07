import Foundation
import X509

/// Who a certificate speaks for. Identity comes from the certificate alone: the id is its common
/// name, the role its organisational unit, the region its locality.
public struct Identity: Sendable, Equatable, CustomStringConvertible {
    public enum Role: String, Sendable, CaseIterable {
        case silo, broker, admin
        /// Reads `/metrics` and nothing else (a Prometheus server).
        case monitor
        case dataScientist = "data-scientist"
        case complianceOfficer = "compliance-officer"

        /// Services (silos, brokers) carry a region for residency; people do not.
        public var isService: Bool { self == .silo || self == .broker }
    }

    public let id: String
    public let role: Role
    /// Region for silos and brokers (residency); nil for people.
    public let region: String?

    public init(id: String, role: Role, region: String?) throws {
        guard Self.isName(id) else {
            throw PKIError("identity id '\(PeerText.bounded(id, limit: 64))' must be 1–64 ASCII letters, digits, '-', '.' or '_'")
        }
        if role.isService && (region ?? "").isEmpty { throw PKIError("a \(role.rawValue) needs a region") }
        if let region, !Self.isName(region) {
            throw PKIError("region '\(PeerText.bounded(region, limit: 64))' must be at most 64 ASCII letters, digits, '-', '.' or '_'")
        }
        self.id = id
        self.role = role
        self.region = role.isService ? region : nil
    }

    /// 1–64 ASCII letters, digits, '-', '.' or '_': what an id or a region may be.
    static func isName(_ s: String) -> Bool {
        (1...64).contains(s.utf8.count) && s.utf8.allSatisfy { (65...90).contains($0) || (97...122).contains($0) || (48...57).contains($0) || $0 == 45 || $0 == 46 || $0 == 95 }
    }

    public var description: String { "\(role.rawValue) '\(id)'" + (region.map { " in \($0)" } ?? "") }

    /// The subject name that encodes this identity.
    public var distinguishedName: DistinguishedName {
        get throws {
            try DistinguishedName {
                CommonName(id)
                OrganizationalUnitName(role.rawValue)
                if let region { LocalityName(region) }
                OrganizationName("FedGate consortium")
            }
        }
    }

    /// Reads the identity a (verified) certificate or CSR subject carries. A subject that names
    /// more than one id, role or region is ambiguous and refused: reading one of them (the last
    /// organisational unit, say) would let a certificate for two roles act as either.
    public init(subject: DistinguishedName) throws {
        var cn: [String] = [], ou: [String] = [], l: [String] = []
        for rdn in subject {
            for attribute in rdn {
                let value = String(describing: attribute.value)
                switch attribute.type {
                case .RDNAttributeType.commonName: cn.append(value)
                case .RDNAttributeType.organizationalUnitName: ou.append(value)
                case .RDNAttributeType.localityName: l.append(value)
                default: continue
                }
            }
        }
        for (values, what) in [(cn, "common names (ids)"), (ou, "organisational units (roles)"), (l, "localities (regions)")] where values.count > 1 {
            throw PKIError("the subject is ambiguous: it has \(values.count) \(what), \(values.map { "'\(PeerText.bounded($0, limit: 64))'" }.joined(separator: ", ")); "
                           + "a FedGate certificate names exactly one")
        }
        try self.init(cn: cn.first, ou: ou.first, l: l.first)
    }

    private init(cn: String?, ou: String?, l: String?) throws {
        guard let cn else { throw PKIError("the subject has no common name (the identity id)") }
        guard let ou, let role = Role(rawValue: ou) else {
            throw PKIError("the subject's organisational unit '\(PeerText.bounded(ou ?? "", limit: 64))' is not a role (\(Role.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        try self.init(id: cn, role: role, region: l)
    }
}

/// A PKI operation was refused; the message says why and what to do.
public struct PKIError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
