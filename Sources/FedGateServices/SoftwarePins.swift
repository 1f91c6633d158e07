import Crypto
import Foundation

/// What a FedGate process runs: its version and the SHA-256 of its executable. Sent by a gateway in
/// its hello and by the broker in its welcome, so each side can hold the other to its pins.
///
/// This proves less than it may seem: the peer reports both itself, so a party that modified its
/// program can report the genuine values. Pins stop honest mistakes (an old or unvetted release
/// left running) and make the software each party claimed part of the audit trail; they are not
/// attestation (no trusted hardware vouches for the report).
public struct SoftwareIdentity: Sendable, Equatable, CustomStringConvertible {
    public let version: String
    /// Hex SHA-256 of the executable; empty when it could not be read.
    public let sha256: String

    public init(version: String, sha256: String) { (self.version, self.sha256) = (version, sha256) }

    /// This process: `fedgate VERSION` and the hash of /proc/self/exe, read once.
    public static let running = SoftwareIdentity(version: "fedgate \(FedGateVersion.current)", sha256: executableSHA256())

    public var description: String { sha256.isEmpty ? version : "\(version) (sha256 \(sha256.prefix(16))…)" }

    static func executableSHA256() -> String {
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/exe") else { return "" }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// The software versions (or executable hashes) a party accepts from its peer; empty lists accept any.
public struct VersionPins: Sendable, Equatable {
    public var versions: [String]
    public var sha256: [String]

    public init(versions: [String] = [], sha256: [String] = []) { (self.versions, self.sha256) = (versions, sha256.map { $0.lowercased() }) }

    public static let any = VersionPins()

    /// Why `peer` (named `who`) is refused, with both sides' versions, or nil when the pins accept it.
    public func refusal(of peer: SoftwareIdentity, who: String, ours: SoftwareIdentity) -> String? {
        if !versions.isEmpty, !versions.contains(peer.version) {
            return "\(who) runs \(peer.version); this side (\(ours.version)) accepts only \(versions.joined(separator: ", ")): install a pinned release, or change the pins"
        }
        if !sha256.isEmpty, !sha256.contains(peer.sha256.lowercased()) {
            return "\(who)'s executable (\(peer)) is not one of the \(sha256.count) pinned builds (this side runs \(ours)): install a pinned build, or add its SHA-256 to the pins"
        }
        return nil
    }
}
