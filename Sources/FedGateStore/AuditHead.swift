import Crypto
import Foundation

/// The head of a party's audit chain (the last record's sequence and hash) signed with the key of
/// the party's certificate. A party keeps its own heads; another party that keeps a copy is a
/// witness: it can later check the first party's chain against it.
public struct AuditHead: Sendable, Equatable, Codable {
    public let signer: String
    public let seq: Int
    public let hash: String
    public let at: Date
    /// The signer's certificate (PEM), so the signature can be checked against the consortium CA.
    public let certificate: String
    /// ECDSA P-256 over `signedBytes`, DER, base64.
    public let signature: String

    public init(signer: String, seq: Int, hash: String, at: Date, certificate: String, signature: String) {
        self.signer = signer
        self.seq = seq
        self.hash = hash
        self.at = at
        self.certificate = certificate
        self.signature = signature
    }

    /// What the signature covers: a domain label and every field but the certificate. The time is
    /// taken in whole milliseconds, so a head read back from a store or a message (where a date
    /// may come back a rounding step away) still verifies.
    public static func signedBytes(signer: String, seq: Int, hash: String, at: Date) -> Data {
        Data(["fedgate-audit-head-v1", signer, String(seq), hash, String(milliseconds(at))].joined(separator: "\u{0}").utf8)
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    /// The head (`seq`, `hash`), signed now with `key` for `signer`.
    public static func sign(seq: Int, hash: String, signer: String, certificate: String, key: P256.Signing.PrivateKey, at now: Date = Date()) throws -> AuditHead {
        let at = Date(timeIntervalSince1970: Double(milliseconds(now)) / 1000)
        let signature = try key.signature(for: signedBytes(signer: signer, seq: seq, hash: hash, at: at))
        return AuditHead(signer: signer, seq: seq, hash: hash, at: at, certificate: certificate, signature: signature.derRepresentation.base64EncodedString())
    }

    /// Whether `signature` is `publicKey`'s over this head.
    public func isSigned(by publicKey: P256.Signing.PublicKey) -> Bool {
        guard let der = Data(base64Encoded: signature), let sig = try? P256.Signing.ECDSASignature(derRepresentation: der) else { return false }
        return publicKey.isValidSignature(sig, for: Self.signedBytes(signer: signer, seq: seq, hash: hash, at: at))
    }

    /// Where the chain disagrees with this head: nil when the chain holds record `seq` with `hash`.
    public func disagreement(with records: [AuditRecord]) -> String? {
        guard let record = records.first(where: { $0.seq == seq }) else {
            let last = records.last?.seq ?? 0
            return "\(signer)'s head signed at \(at) names record \(seq), but the chain ends at record \(last): records \(last + 1)…\(seq) were removed"
        }
        guard record.hash == hash else {
            return "\(signer)'s head signed at \(at) names record \(seq) with hash \(hash.prefix(16))…, the chain holds \(record.hash.prefix(16))…: the chain was rewritten"
        }
        return nil
    }
}
