import FedGatePKI
import FedGateProto
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import Logging
import X509

/// Enrolment by one-time token, on the broker's enrolment listener (no client certificate there).
/// The token is checked against its stored hash; the CSR must be the invited silo's, in its region;
/// the certificate is returned only after the invitation is used and the party enrolled in one
/// transaction, so a token enrols exactly one certificate.
public struct EnrollmentService: Fedgate_V1_Enrollment.SimpleServiceProtocol {
    let issuer: CertificateIssuer
    let store: any PartyRegistry & AuditLog
    let logger: Logger

    public init(issuer: CertificateIssuer, store: any PartyRegistry & AuditLog, logger: Logger) {
        self.issuer = issuer
        self.store = store
        self.logger = logger
    }

    public func enroll(request: Fedgate_V1_EnrollRequest, context: ServerContext) async throws -> Fedgate_V1_EnrollResponse {
        let hash = Enrolment.hash(request.token)
        do {
            let csr: CertificateSigningRequest
            do { csr = try CertificateSigningRequest(pemEncoded: request.csrPem) } catch {
                throw RPCError(code: .invalidArgument, message: "csr_pem is not a PEM certificate signing request")
            }
            let identity: Identity
            do { identity = try Identity(subject: csr.subject) } catch { throw RPCError(code: .invalidArgument, message: "the CSR: \(error)") }
            guard identity.role == .silo else { throw RPCError(code: .permissionDenied, message: "enrolment tokens are for silos, not a \(identity.role.rawValue)") }
            guard let invitation = try await store.invitation(tokenSHA256: hash) else {
                throw RPCError(code: .permissionDenied, message: "the enrolment token is not valid; ask the consortium operator for a new one")
            }
            if let refusal = invitation.refusal(for: identity.id, region: identity.region, at: Date()) {
                throw RPCError(code: .permissionDenied, message: refusal)
            }
            let certificate: Certificate
            do { certificate = try issuer.authority.issue(csr, days: issuer.days) } catch let e as PKIError {
                throw RPCError(code: .invalidArgument, message: e.description)
            }
            let party = Party(id: identity.id, kind: .silo, region: identity.region ?? "", jurisdiction: invitation.jurisdiction,
                              certificateSHA256: try certificate.sha256Fingerprint, enrolledAt: Date())
            do { try await store.redeem(tokenSHA256: hash, enrolling: party, at: Date()) } catch let e as LedgerError {
                throw RPCError(code: .permissionDenied, message: "\(e)")  // used concurrently, or expired meanwhile
            }
            logger.notice("silo enrolled by token", metadata: ["silo": "\(identity.id)", "not_after": "\(certificate.notValidAfter)"])
            var response = Fedgate_V1_EnrollResponse()
            response.certificatePem = try issuer.authority.chainPEM(certificate)
            return response
        } catch let error as RPCError {
            logger.warning("enrolment refused", metadata: ["reason": "\(error.message)"])
            try? await store.audit(.refused(.enrolment, .init(reason: error.message)), actor: "enrolment", subject: "-", at: Date())
            throw error
        }
    }
}

/// The silo's side of enrolment by token.
public enum Enrolment {
    /// A fresh key and CSR for `identity`, signed by the broker's enrolment listener against the
    /// one-time `token`; the key never leaves this process except into the returned credentials.
    public static func enroll(identity: Identity, token: String, host: String, port: Int, brokerName: String,
                              caPEM: String) async throws -> TLSCredentials {
        let request = try EnrollmentRequest(identity: identity)
        var message = Fedgate_V1_EnrollRequest()
        message.token = token
        message.csrPem = try request.csrPEM
        let transport = try FedGateTransports.enrolmentClient(host: host, port: port, serverName: brokerName, caPEM: caPEM)
        let response = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Enrollment.Client(wrapping: $0).enroll(message) }
        let credentials = try TLSCredentials(certificatePEM: response.certificatePem, keyPEM: request.keyPEM, caPEM: caPEM)
        guard credentials.identity == identity else {
            throw PKIError("the broker returned a certificate for \(credentials.identity), not \(identity)")
        }
        return credentials
    }

    /// What every token starts with: a token can never be taken for a command-line option (base64url
    /// may begin with `-`, one token in 64), and a secret scanner can find one pasted where it must not be.
    public static let tokenPrefix = "fgt_"

    /// A new one-time token: `fgt_` and 256 random bits in base64url; the store keeps only `hash(token)`.
    public static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return tokenPrefix + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func hash(_ token: String) -> String { TransferDigest.hex(Array(token.utf8)) }
}
