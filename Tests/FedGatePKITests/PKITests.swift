import Crypto
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

/// The root stays offline: an intermediate signed by it issues certificates, which travel with the
/// intermediate after them and verify against the root alone.
@Suite("An intermediate CA under the consortium root")
struct IntermediateCATests {
    static let silo = { try! Identity(id: "clinic-c", role: .silo, region: "eu-west") }()

    @Test("a certificate an intermediate issued verifies against the root when its chain comes with it, and not without")
    func chainVerifies() async throws {
        let root = try ConsortiumCA.create()
        let issuing = try root.intermediate(name: "broker issuing CA", days: 365)
        #expect(root.isRoot && !issuing.isRoot)
        let cert = try issuing.issue(try EnrollmentRequest(identity: Self.silo).csr, days: 7)
        let file = try issuing.chainPEM(cert)
        let chain = try Certificate.chain(pemEncoded: file)
        #expect(chain.count == 2 && chain[0] == cert && chain[1] == issuing.certificate)
        #expect(try Certificate.leaf(pemEncoded: file) == cert)
        #expect(try await ConsortiumCA.identity(ofChain: file, trusting: root.certificate) == Self.silo)
        await #expect(throws: PKIError.self, "without the intermediate there is no chain to the root") {
            try await root.identity(of: cert)
        }
        // The root's own certificates carry no chain.
        let direct = try root.issue(try EnrollmentRequest(identity: Self.silo).csr, days: 7)
        #expect(try Certificate.chain(pemEncoded: try root.chainPEM(direct)).count == 1)
    }

    @Test("an intermediate cannot make another CA, and an intermediate of another root does not verify")
    func limits() async throws {
        let root = try ConsortiumCA.create(), rogue = try ConsortiumCA.create(name: "rogue CA")
        let issuing = try root.intermediate(name: "broker issuing CA", days: 30)
        #expect(throws: PKIError.self) { try issuing.intermediate(name: "deeper", days: 30) }
        #expect(throws: PKIError.self) { try root.intermediate(name: "too long", days: 0) }
        let foreign = try rogue.intermediate(name: "rogue issuing CA", days: 30)
        let cert = try foreign.issue(try EnrollmentRequest(identity: Self.silo).csr, days: 7)
        await #expect(throws: PKIError.self) { try await ConsortiumCA.identity(ofChain: try foreign.chainPEM(cert), trusting: root.certificate) }
        // The intermediate never outlives the root.
        #expect(issuing.certificate.notValidAfter <= root.certificate.notValidAfter)
    }

    @Test("a root made before intermediates existed (path length 0) refuses to sign one, saying what to do")
    func oldRoot() throws {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName("FedGate consortium CA") }
        let cert = try Certificate(version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                                   notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(86_400 * 365),
                                   issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                                   extensions: try Certificate.Extensions {
                                       Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                                       Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                                   }, issuerPrivateKey: .init(key))
        let old = try ConsortiumCA(certificatePEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
        #expect { try old.intermediate(name: "broker issuing CA", days: 30) } throws: { error in
            "\(error)".contains("path length 0") && "\(error)".contains("fedgate ca init")
        }
    }

    @Test("a file of more than 8 certificates, or of none, is refused as a chain")
    func malformedChains() throws {
        let root = try ConsortiumCA.create()
        let pem = try root.certificatePEM
        #expect(throws: PKIError.self) { try Certificate.chain(pemEncoded: String(repeating: pem + "\n", count: 9)) }
        #expect(throws: (any Error).self) { try Certificate.chain(pemEncoded: "not a certificate") }
    }
}
