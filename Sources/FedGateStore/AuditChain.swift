import Crypto
import Foundation

/// One append-only audit record. Its hash covers the previous record's hash and its own content,
/// so editing, removing or reordering any record breaks the chain from there on.
public struct AuditRecord: Sendable, Equatable {
    public let seq: Int
    public let at: Date
    public let actor: String
    public let action: String
    public let subject: String
    /// Canonical JSON (sorted keys) of what happened.
    public let payload: String
    public let previousHash: String
    public let hash: String

    public init(seq: Int, at: Date, actor: String, action: String, subject: String, payload: String, previousHash: String, hash: String) {
        (self.seq, self.at, self.actor, self.action, self.subject) = (seq, at, actor, action, subject)
        (self.payload, self.previousHash, self.hash) = (payload, previousHash, hash)
    }

    /// The hash a record with these fields must carry.
    public static func hash(seq: Int, at: Date, actor: String, action: String, subject: String, payload: String, previousHash: String) -> String {
        var h = SHA256()
        for part in [previousHash, String(seq), String(at.timeIntervalSince1970.bitPattern), actor, action, subject, payload] {
            h.update(data: Data(part.utf8))
            h.update(data: Data([0]))  // field separator: "ab"+"c" ≠ "a"+"bc"
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The hash before the first record.
    public static let genesis = String(repeating: "0", count: 64)

    /// The next record after `previous` (nil: the first).
    public static func next(after previous: (seq: Int, hash: String)?, at: Date, actor: String, action: String, subject: String, payload: String) -> AuditRecord {
        let seq = (previous?.seq ?? 0) + 1
        let prev = previous?.hash ?? genesis
        return AuditRecord(seq: seq, at: at, actor: actor, action: action, subject: subject, payload: payload, previousHash: prev,
                           hash: hash(seq: seq, at: at, actor: actor, action: action, subject: subject, payload: payload, previousHash: prev))
    }
}

/// What `fedgate audit verify` finds.
public enum AuditVerification: Sendable, Equatable, CustomStringConvertible {
    case intact(records: Int)
    /// The first record that does not follow from the one before: edited, removed before it, or moved.
    case broken(seq: Int, reason: String)

    public var description: String {
        switch self {
        case .intact(let n): return "audit chain intact: \(n) records"
        case .broken(let seq, let reason): return "audit chain broken at record \(seq): \(reason)"
        }
    }

    /// Walks records in stored order and names the first one out of place.
    public static func verify(_ records: [AuditRecord]) -> AuditVerification {
        var previous: AuditRecord?
        for r in records {
            let expectedSeq = (previous?.seq ?? 0) + 1
            if r.seq != expectedSeq {
                return .broken(seq: r.seq, reason: r.seq > expectedSeq
                    ? "records \(expectedSeq)…\(r.seq - 1) are missing (removed)" : "out of order after record \(previous?.seq ?? 0)")
            }
            if r.previousHash != (previous?.hash ?? AuditRecord.genesis) {
                return .broken(seq: r.seq, reason: "it does not link to the record before it (a record was removed, replaced or reordered)")
            }
            let recomputed = AuditRecord.hash(seq: r.seq, at: r.at, actor: r.actor, action: r.action, subject: r.subject,
                                              payload: r.payload, previousHash: r.previousHash)
            if recomputed != r.hash { return .broken(seq: r.seq, reason: "its content was edited after it was written") }
            previous = r
        }
        return .intact(records: records.count)
    }
}
