import Crypto
import FedGatePKI
import FedGateStore
import FedGateTransport
import Foundation
import Logging
import X509

/// Signs this party's audit-chain head with its certificate's key whenever the chain has grown,
/// every `interval`, and keeps the signed head in its own store. With heads signed, an attacker
/// who can write the database but not read the party's key cannot rewrite or truncate the chain
/// before the last head without `fedgate audit verify` naming it.
public struct AuditHeadKeeper: Sendable {
    let store: any LedgerBackend
    let credentials: TLSCredentials
    let logger: Logger

    public init(store: any LedgerBackend, credentials: TLSCredentials, logger: Logger) {
        self.store = store
        self.credentials = credentials
        self.logger = logger
    }

    /// Signs the current head unless it is `after`; the sequence signed (or `after`).
    @discardableResult
    public func sign(after last: Int? = nil) async throws -> Int? {
        guard let (seq, hash) = try await store.auditTail(), seq != last else { return last }
        let key = try P256.Signing.PrivateKey(pemRepresentation: credentials.keyPEM)
        try await store.record(try AuditHead.sign(seq: seq, hash: hash, signer: credentials.identity.id, certificate: credentials.certificatePEM, key: key))
        return seq
    }

    /// Signs every `interval` while the chain grows, until cancelled; once more on the way out
    /// (from a task of its own: the store's calls in a cancelled task would be cancelled too).
    public func run(every interval: Duration = .seconds(5)) async {
        var last: Int?
        while !Task.isCancelled {
            do { last = try await sign(after: last) } catch {
                logger.warning("could not sign the audit head", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
        let signed = last
        await Task {
            do { _ = try await sign(after: signed) } catch { logger.warning("could not sign the final audit head", metadata: ["error": "\(error)"]) }
        }.value
    }
}

/// What `fedgate audit verify` checks beyond the chain's own links: every signed head (the party's
/// own and the witnesses' copies) is signed by a certificate of the consortium CA for the identity
/// it names, and the chain still holds the record each head names.
public enum AuditHeadCheck {
    /// Every problem found, in words; empty when the heads and the chain agree.
    /// `ca` nil: the certificates are taken as they are (the signatures and the chain are still checked).
    public static func problems(heads: [AuditHead], records: [AuditRecord], ca: Certificate?) async -> [String] {
        var out: [String] = []
        for head in heads {
            guard let certificate = try? Certificate(pemEncoded: head.certificate) else {
                out.append("the head of record \(head.seq) by '\(head.signer)' carries no readable certificate")
                continue
            }
            // The certificate as it was when the head was signed (it may have expired since).
            let identity: Identity?
            if let ca { identity = try? await ConsortiumCA.identity(of: certificate, trusting: ca, at: head.at) } else { identity = try? Identity(subject: certificate.subject) }
            guard let identity, identity.id == head.signer else {
                out.append("the head of record \(head.seq) claims '\(head.signer)' but its certificate is not the consortium CA's for that identity: forged")
                continue
            }
            guard let key = P256.Signing.PublicKey(certificate.publicKey), head.isSigned(by: key) else {
                out.append("the head of record \(head.seq) by '\(head.signer)' has a signature that does not verify: forged or altered")
                continue
            }
            if let disagreement = head.disagreement(with: records) { out.append(disagreement) }
        }
        return out
    }
}
