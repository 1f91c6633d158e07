import Crypto
import FedGatePKI
import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting
import X509

/// A signed head is taken only when it is genuine: the signer's own, signed by the key of a
/// certificate the consortium CA issued for it, and unchanged since.
@Suite("Signed audit heads")
struct AuditHeadTests {
    @Test("a genuine head is kept; one altered, signed as another party, or by another CA's certificate is refused and not kept")
    func onlyGenuineHeadsAreKept() async throws {
        let consortium = try Consortium()
        let store = try await consortium.store("witness")
        let silo = try consortium.credentials("hospital-a", .silo)
        let key = try P256.Signing.PrivateKey(pemRepresentation: silo.keyPEM)
        let hash = String(repeating: "ab", count: 32)
        let head = try AuditHead.sign(seq: 7, hash: hash, signer: "hospital-a", certificate: silo.certificatePEM, key: key)
        let caPEM = try consortium.ca.certificatePEM
        #expect(await AuditHeadCheck.keep(head, from: "hospital-a", caPEM: caPEM, in: store, logger: consortium.logger) == nil)

        let altered = AuditHead(signer: head.signer, seq: head.seq, hash: String(repeating: "cd", count: 32), at: head.at,
                                certificate: head.certificate, signature: head.signature)
        #expect(await AuditHeadCheck.keep(altered, from: "hospital-a", caPEM: caPEM, in: store, logger: consortium.logger)?.contains("does not verify") == true)
        #expect(await AuditHeadCheck.keep(head, from: "hospital-b", caPEM: caPEM, in: store, logger: consortium.logger)?.contains("signed as") == true)
        let other = try ConsortiumCA.create(name: "Some other CA")
        let foreign = try consortium.credentials("hospital-c", .silo, issuer: other)
        let forged = try AuditHead.sign(seq: 3, hash: hash, signer: "hospital-c", certificate: foreign.certificatePEM,
                                        key: try P256.Signing.PrivateKey(pemRepresentation: foreign.keyPEM))
        #expect(await AuditHeadCheck.keep(forged, from: "hospital-c", caPEM: caPEM, in: store, logger: consortium.logger)?.contains("forged") == true)
        let kept = try await store.witnessedHeads(signer: nil)
        #expect(kept.map(\.signature) == [head.signature], "only the genuine head was kept")
        #expect(await AuditHeadCheck.forgery(try #require(kept.first), ca: consortium.ca.certificate) == nil, "read back from the store, it still verifies")
    }

    @Test("a chain that no longer holds a head's record is named: removed records, or a rewritten one")
    func disagreements() {
        let first = AuditRecord.next(after: nil, at: Date(timeIntervalSince1970: 1), actor: "a", action: "x", subject: "s", payload: "{}")
        let second = AuditRecord.next(after: (first.seq, first.hash), at: Date(timeIntervalSince1970: 2), actor: "a", action: "y", subject: "s", payload: "{}")
        let head = AuditHead(signer: "broker", seq: 2, hash: second.hash, at: Date(), certificate: "", signature: "")
        #expect(head.disagreement(with: [first, second]) == nil)
        #expect(head.disagreement(with: [first])?.contains("records 2…2 were removed") == true)
        let other = AuditRecord.next(after: (first.seq, first.hash), at: Date(timeIntervalSince1970: 2), actor: "a", action: "z", subject: "s", payload: "{}")
        #expect(head.disagreement(with: [first, other])?.contains("rewritten") == true)
    }
}
