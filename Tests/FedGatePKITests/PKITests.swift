import Foundation
import Testing
import X509
@testable import FedGatePKI

@Suite("Consortium PKI")
struct PKITests {
    @Test("a silo's CSR becomes a short-lived certificate whose identity is read back from the certificate alone")
    func enrolment() async throws {
        let ca = try ConsortiumCA.create()
        let request = try EnrollmentRequest(identity: try Identity(id: "hospital-a", role: .silo, region: "eu-west"))
        let cert = try ca.issue(request.csr, days: 7)
        let identity = try await ca.identity(of: cert)
        #expect(identity == (try Identity(id: "hospital-a", role: .silo, region: "eu-west")))
        #expect(cert.notValidAfter.timeIntervalSince(cert.notValidBefore) < 8 * 86_400)
        #expect(try cert.sha256Fingerprint.count == 64)
        let person = try ca.issue(try EnrollmentRequest(identity: try Identity(id: "alice", role: .complianceOfficer, region: nil)).csr, days: 1)
        #expect(try await ca.identity(of: person).role == .complianceOfficer)
    }

    @Test("certificates from another CA, expired ones, and CSRs with a bad subject are refused")
    func refusals() async throws {
        let ca = try ConsortiumCA.create(), other = try ConsortiumCA.create(name: "rogue CA")
        let csr = try EnrollmentRequest(identity: try Identity(id: "bank-b", role: .silo, region: "eu-central")).csr
        await #expect(throws: PKIError.self) { _ = try await ca.identity(of: try other.issue(csr, days: 7)) }
        let cert = try ca.issue(csr, days: 2)
        await #expect(throws: PKIError.self) { _ = try await ca.identity(of: cert, at: Date().addingTimeInterval(3 * 86_400)) }
        #expect(throws: PKIError.self) { _ = try ca.issue(csr, days: 365) }
        #expect(throws: PKIError.self) { try Identity(id: "bad id!", role: .silo, region: "x") }
        #expect(throws: PKIError.self) { try Identity(id: "silo-without-region", role: .silo, region: nil) }
    }

    @Test("the CA round-trips through PEM and refuses a key that is not its own")
    func pem() throws {
        let ca = try ConsortiumCA.create()
        let back = try ConsortiumCA(certificatePEM: try ca.certificatePEM, keyPEM: ca.keyPEM)
        #expect(back.certificate == ca.certificate)
        #expect(throws: PKIError.self) { try ConsortiumCA(certificatePEM: try ca.certificatePEM, keyPEM: try ConsortiumCA.create().keyPEM) }
    }
}
