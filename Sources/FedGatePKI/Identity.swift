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
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else {
            throw PKIError("identity id '\(id)' must be 1–64 letters, digits, '-', '.' or '_'")
        }
        if role.isService && (region ?? "").isEmpty { throw PKIError("a \(role.rawValue) needs a region") }
        self.id = id
        self.role = role
        self.region = role.isService ? region : nil
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

    /// Reads the identity a (verified) certificate or CSR subject carries.
    public init(subject: DistinguishedName) throws {
        var cn: String?, ou: String?, l: String?
        for rdn in subject {
            for attribute in rdn {
                let value = String(describing: attribute.value)
                switch attribute.type {
                case .RDNAttributeType.commonName: cn = value
                case .RDNAttributeType.organizationalUnitName: ou = value
                case .RDNAttributeType.localityName: l = value
                default: continue
                }
            }
        }
        guard let cn else { throw PKIError("the subject has no common name (the identity id)") }
        guard let ou, let role = Role(rawValue: ou) else {
            throw PKIError("the subject's organisational unit '\(ou ?? "")' is not a role (\(Role.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        try self.init(id: cn, role: role, region: l)
    }
}

/// A PKI operation was refused; the message says why and what to do.
public struct PKIError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
