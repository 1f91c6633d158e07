import Foundation
import Testing
import SwiftASN1
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

    @Test("a service's certificate carries the host names and addresses it is reached by; people's carry none; a malformed name is refused")
    func alternativeNames() throws {
        let ca = try ConsortiumCA.create()
        let broker = try EnrollmentRequest(identity: try Identity(id: "broker", role: .broker, region: "eu-west"))
        let cert = try ca.issue(broker.csr, days: 7, alternativeNames: ["Broker.Consortium.example", "10.0.0.5", "2001:db8::1"])
        let names = try #require(try cert.extensions.subjectAlternativeNames)
        #expect(names.count == 4 && names.contains(.dnsName("broker")) && names.contains(.dnsName("broker.consortium.example")))
        #expect(names.contains(.ipAddress(.init(contentBytes: [10, 0, 0, 5]))))
        #expect(names.contains(.ipAddress(.init(contentBytes: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]))))
        for bad in ["-broker.example", "broker..example", "broker example", "bröker.example", ""] {
            #expect(throws: PKIError.self, "\(bad)") { try ca.issue(broker.csr, days: 7, alternativeNames: [bad]) }
        }
        let person = try EnrollmentRequest(identity: try Identity(id: "dana", role: .dataScientist, region: nil))
        #expect(throws: PKIError.self) { try ca.issue(person.csr, days: 7, alternativeNames: ["dana.example"]) }
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
