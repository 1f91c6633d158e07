import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority of the consortium: a P-256 key and its certificate. The root is
/// self-signed and may sign one level of intermediate CAs (`intermediate`), so the root's key can
/// stay offline while a broker issues with an intermediate's. Either signs short-lived
/// certificates for silos, brokers and people from their CSRs; private keys never leave their owners.
public struct ConsortiumCA: Sendable {
    public let certificate: Certificate
    private let key: P256.Signing.PrivateKey

    /// A new CA valid for `years`.
    public static func create(name: String = "FedGate consortium CA", years: Int = 10, now: Date = Date()) throws -> ConsortiumCA {
        try authority(name: name, notAfter: now.addingTimeInterval(Double(years) * 365 * 86_400), pathLength: 1, signedBy: nil, now: now)
    }

    /// A new CA key and its certificate: self-signed (`signedBy` nil, a root) or signed by a root.
    private static func authority(name: String, notAfter: Date, pathLength: Int, signedBy signer: ConsortiumCA?, now: Date) throws -> ConsortiumCA {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name); OrganizationName("FedGate consortium") }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: notAfter,
            issuer: signer?.certificate.subject ?? subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: pathLength))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(signer?.key ?? key))
        return ConsortiumCA(certificate: cert, key: key)
    }

    /// Whether this is the consortium's root (self-signed), not an intermediate.
    public var isRoot: Bool { certificate.issuer == certificate.subject }

    /// An intermediate CA signed by this root, valid for `days` (at most until the root expires),
    /// that can sign certificates but no further CA: a broker's `issuing:` key, so the root's key
    /// stays offline. Refused when this CA is itself an intermediate, or a root made before
    /// intermediates existed (its path length allows none).
    public func intermediate(name: String, days: Int, now: Date = Date()) throws -> ConsortiumCA {
        guard isRoot else { throw PKIError("'\(certificate.subject)' is an intermediate CA; only the root signs intermediates") }
        guard let constraints = try? certificate.extensions.basicConstraints, case .isCertificateAuthority(let depth) = constraints,
              depth.map({ $0 >= 1 }) ?? true else {
            throw PKIError("this root CA allows no intermediate CA (an earlier FedGate made it with path length 0); "
                           + "make a new root with `fedgate ca init`, or keep issuing with this one")
        }
        guard (1...3650).contains(days) else { throw PKIError("an intermediate CA lives 1 to 3650 days, not \(days)") }
        let notAfter = min(now.addingTimeInterval(Double(days) * 86_400), certificate.notValidAfter)
        return try Self.authority(name: name, notAfter: notAfter, pathLength: 0, signedBy: self, now: now)
    }

    /// What the owner of `issued` installs as its certificate file: the certificate, followed by
    /// this CA's when this is an intermediate (peers trust only the root, so the chain travels).
    public func chainPEM(_ issued: Certificate) throws -> String {
        try issued.serializeAsPEM().pemString + "\n" + (isRoot ? "" : try certificate.serializeAsPEM().pemString + "\n")
    }

    /// Loads a CA from its PEM certificate and key.
    public init(certificatePEM: String, keyPEM: String) throws {
        do {
            certificate = try Certificate.leaf(pemEncoded: certificatePEM)
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
    /// Every certificate of a PEM file, in order: a certificate alone, or one followed by the
    /// intermediate CA that issued it.
    public static func chain(pemEncoded text: String) throws -> [Certificate] {
        let documents = try PEMDocument.parseMultiple(pemString: text)
        guard !documents.isEmpty else { throw PKIError("no PEM certificate found") }
        guard documents.count <= 8 else { throw PKIError("\(documents.count) certificates in one file; a chain has at most 8") }
        return try documents.map { try Certificate(pemDocument: $0) }
    }

    /// The first certificate of a PEM file (the owner's, before any intermediate).
    public static func leaf(pemEncoded text: String) throws -> Certificate { try chain(pemEncoded: text)[0] }

    /// SHA-256 of the DER encoding: the fingerprint the store records.
    public var sha256Fingerprint: String {
        get throws {
            SHA256.hash(data: try serializeAsPEM().derBytes).map { String(format: "%02x", $0) }.joined()
        }
    }
}
