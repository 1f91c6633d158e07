import Crypto
import Foundation
import SwiftASN1
import X509

/// The consortium's certificate authority: a P-256 key and a self-signed certificate. It signs
/// short-lived certificates for silos, brokers and people from their CSRs; private keys never
/// leave their owners.
public struct ConsortiumCA: Sendable {
    public let certificate: Certificate
    private let key: P256.Signing.PrivateKey

    /// A new CA valid for `years`.
    public static func create(name: String = "FedGate consortium CA", years: Int = 10, now: Date = Date()) throws -> ConsortiumCA {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name); OrganizationName("FedGate consortium") }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        return ConsortiumCA(certificate: cert, key: key)
    }

    /// Loads a CA from its PEM certificate and key.
    public init(certificatePEM: String, keyPEM: String) throws {
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
            key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        } catch { throw PKIError("cannot read the CA certificate or key: \(error)") }
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw PKIError("the CA key does not match the CA certificate")
        }
    }

    private init(certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    public var certificatePEM: String { get throws { try certificate.serializeAsPEM().pemString } }
    public var keyPEM: String { key.pemRepresentation }

    /// Issues a certificate for a CSR whose signature verifies and whose subject is a valid identity,
    /// valid for `days` (short-lived: gateways renew). Services get client and server authentication,
    /// people client authentication only.
    /// `alternativeNames`: the host names or IP addresses a service (a broker) is also reached by,
    /// besides its id, so clients check the name they dial; identity stays the subject's.
    public func issue(_ csr: CertificateSigningRequest, days: Int, alternativeNames: [String] = [], now: Date = Date()) throws -> Certificate {
        guard (1...90).contains(days) else { throw PKIError("certificates live 1 to 90 days, not \(days)") }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw PKIError("the CSR's signature does not verify: it was altered or not made with its key")
        }
        let identity = try Identity(subject: csr.subject)
        guard alternativeNames.isEmpty || identity.role.isService else {
            throw PKIError("only services (brokers, silos) are reached by host name; \(identity.role.rawValue) certificates carry no other names")
        }
        let names = [GeneralName.dnsName(identity.id)] + (try alternativeNames.map(Self.generalName))
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: csr.publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: certificate.subject, subject: try identity.distinguishedName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(identity.role.isService ? [.clientAuth, .serverAuth] : [.clientAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key))
    }
}

extension ConsortiumCA {
    /// A name as a certificate carries it: an IPv4 or IPv6 address, or a DNS host name.
    static func generalName(_ text: String) throws -> GeneralName {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: &v4) { ArraySlice($0) })) }
        if inet_pton(AF_INET6, text, &v6) == 1 { return .ipAddress(ASN1OctetString(contentBytes: withUnsafeBytes(of: &v6) { ArraySlice($0) })) }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        let valid = text.count <= 253 && !labels.isEmpty && labels.allSatisfy { label in
            (1...63).contains(label.count) && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
        guard valid else { throw PKIError("'\(text.prefix(80))' is neither an IP address nor a host name (letters, digits, hyphens, dots)") }
        return .dnsName(text.lowercased())
    }
}

/// What an owner keeps and what it sends: its private key stays, the CSR travels.
public struct EnrollmentRequest: Sendable {
    public let keyPEM: String
    public let csr: CertificateSigningRequest

    /// A fresh P-256 key and a CSR for `identity`.
    public init(identity: Identity) throws {
        let key = P256.Signing.PrivateKey()
        keyPEM = key.pemRepresentation
        csr = try CertificateSigningRequest(version: .v1, subject: try identity.distinguishedName, privateKey: .init(key),
                                            attributes: .init(), signatureAlgorithm: .ecdsaWithSHA256)
    }

    public var csrPEM: String { get throws { try csr.serializeAsPEM().pemString } }
}

extension Certificate {
    /// SHA-256 of the DER encoding: the fingerprint the store records.
    public var sha256Fingerprint: String {
        get throws {
            SHA256.hash(data: try serializeAsPEM().derBytes).map { String(format: "%02x", $0) }.joined()
        }
    }
}
