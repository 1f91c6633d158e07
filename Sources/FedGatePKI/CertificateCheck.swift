import Foundation
@_spi(FixedExpiryValidationTime) import X509

extension ConsortiumCA {
    /// The identity of a certificate that chains to this CA and is valid at `time`; anything else
    /// (another CA, expired, not yet valid, altered) is refused with the verifier's reasons.
    public func identity(of certificate: Certificate, intermediates: [Certificate] = [], at time: Date = Date()) async throws -> Identity {
        try await Self.identity(of: certificate, trusting: self.certificate, intermediates: intermediates, at: time)
    }

    /// The identity a certificate file carries (a certificate, or one followed by its intermediate
    /// CA), checked against the CA whose certificate is `ca`.
    public static func identity(ofChain text: String, trusting ca: Certificate, at time: Date = Date()) async throws -> Identity {
        let chain = try Certificate.chain(pemEncoded: text)
        return try await identity(of: chain[0], trusting: ca, intermediates: Array(chain.dropFirst()), at: time)
    }

    /// The same check with only the CA's certificate (a silo checking a peer's certificate), and
    /// the intermediate CAs the peer sent with it (its chain).
    public static func identity(of certificate: Certificate, trusting ca: Certificate, intermediates: [Certificate] = [],
                                at time: Date = Date()) async throws -> Identity {
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) {
            RFC5280Policy(fixedExpiryValidationTime: time)
        }
        switch await verifier.validate(leaf: certificate, intermediates: CertificateStore(intermediates)) {
        case .validCertificate:
            return try Identity(subject: certificate.subject)
        case .couldNotValidate(let failures):
            throw PKIError("certificate of '\(certificate.subject)' refused: " + failures.map { "\($0.policyFailureReason)" }.joined(separator: "; "))
        }
    }
}
