import Crypto
import FedGatePKI
import FedGateStore
import FedGateTransport
import Foundation
import Logging
import X509

/// Signs this party's audit-chain head with its certificate's key whenever the chain has grown
/// (every `interval`, and on demand when a head is to be sent to another party), and keeps the
/// signed heads in its own store. With heads signed, an attacker who can write the database but not
/// read the party's key cannot rewrite or truncate the chain before the last head without
/// `fedgate audit verify` naming it; the parties that received a head can check beyond that.
public actor AuditHeadKeeper {
    let store: any AuditLog
    let credentials: TLSCredentials
    let logger: Logger
    private var last: AuditHead?

    public init(store: any AuditLog, credentials: TLSCredentials, logger: Logger) {
        self.store = store
        self.credentials = credentials
        self.logger = logger
    }

    /// The head of the chain as it is now, signed (a new signature only if the chain grew since the
    /// last one); nil while the chain is empty.
    @discardableResult
    public func current() async throws -> AuditHead? {
        guard let (seq, hash) = try await store.auditTail() else { return nil }
        if let last, last.seq == seq, last.hash == hash { return last }
        let key = try P256.Signing.PrivateKey(pemRepresentation: credentials.keyPEM)
        let head = try AuditHead.sign(seq: seq, hash: hash, signer: credentials.identity.id, certificate: credentials.certificatePEM, key: key)
        try await store.record(head)
        last = head
        return head
    }

    /// Signs every `interval` while the chain grows, until cancelled; once more on the way out
    /// (from a task of its own: the store's calls in a cancelled task would be cancelled too).
    public func run(every interval: Duration = .seconds(5)) async {
        while !Task.isCancelled {
            do { try await current() } catch { logger.warning("could not sign the audit head", metadata: ["error": "\(error)"]) }
            try? await Task.sleep(for: interval)
        }
        await Task {
            do { try await self.current() } catch { self.logger.warning("could not sign the final audit head", metadata: ["error": "\(error)"]) }
        }.value
    }
}

/// Whether signed heads are genuine, and whether a chain still holds what they name: what `fedgate
/// audit verify` checks beyond the chain's own links, and what a party checks before it keeps a
/// head another party sent.
public enum AuditHeadCheck {
    /// Why `head` is not genuine (its certificate is not the consortium CA's for the identity it
    /// names, as it was when it signed, or its signature does not verify), or nil. `ca` nil: the
    /// certificate is taken as it is (the signature is still checked).
    public static func forgery(_ head: AuditHead, ca: Certificate?) async -> String? {
        guard let chain = try? Certificate.chain(pemEncoded: head.certificate) else {
            return "the head of record \(head.seq) by '\(head.signer)' carries no readable certificate"
        }
        let certificate = chain[0]
        let identity: Identity?
        if let ca { identity = try? await ConsortiumCA.identity(of: certificate, trusting: ca, intermediates: Array(chain.dropFirst()), at: head.at) } else { identity = try? Identity(subject: certificate.subject) }
        guard let identity, identity.id == head.signer else {
            return "the head of record \(head.seq) claims '\(head.signer)' but its certificate is not the consortium CA's for that identity: forged"
        }
        guard let key = P256.Signing.PublicKey(certificate.publicKey), head.isSigned(by: key) else {
            return "the head of record \(head.seq) by '\(head.signer)' has a signature that does not verify: forged or altered"
        }
        return nil
    }

    /// Every problem found, in words; empty when the heads are genuine and the chain agrees.
    public static func problems(heads: [AuditHead], records: [AuditRecord], ca: Certificate?) async -> [String] {
        var out: [String] = []
        for head in heads {
            if let forged = await forgery(head, ca: ca) { out.append(forged); continue }
            if let disagreement = head.disagreement(with: records) { out.append(disagreement) }
        }
        return out
    }

    /// Keeps `head`, sent by `sender` over its authenticated connection, as a witness of the sender's
    /// trail, if it is the sender's own and genuine; why not otherwise (logged, not kept).
    public static func keep(_ head: AuditHead, from sender: String, caPEM: String, in store: any AuditLog, logger: Logger) async -> String? {
        guard head.signer == sender else { return "\(sender) sent a head signed as '\(PeerText.bounded(head.signer, limit: 64))'" }
        guard let ca = try? Certificate(pemEncoded: caPEM) else { return "no CA certificate to check the head against" }
        if let forged = await forgery(head, ca: ca) { return forged }
        do { try await store.witness(head, receivedAt: Date()) } catch { return "could not keep \(sender)'s head: \(error)" }
        return nil
    }
}
