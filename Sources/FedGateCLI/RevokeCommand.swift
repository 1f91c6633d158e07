import ArgumentParser
import FedGatePKI
import FedGateStore
import FedGateTransport
import Foundation
import X509

/// `fedgate revoke`: revokes any certificate the consortium CA issued, or a whole identity, people
/// included. A running broker applies it within a second: the next handshake is refused and open
/// connections are closed.
struct RevokeCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke an identity (every certificate carrying the id) or one certificate (by file, SHA-256 fingerprint or serial).",
        discussion: """
            Revoke one certificate to retire a lost key and keep the identity (the person or silo gets a new \
            certificate); revoke the identity to shut it out whatever certificate it presents.
            """)
    @Option(help: "An identity id (a person or a silo): every certificate that carries it.") var identity: String?
    @Option(help: "A certificate file (PEM): that certificate only.") var certificate: String?
    @Option(help: "A certificate's SHA-256 fingerprint (hex; colons allowed).") var sha256: String?
    @Option(help: "A certificate's serial number (hex; colons allowed).") var serial: String?
    @Option(help: "Why (kept in the audit trail).") var reason = "revoked by the operator"
    @OptionGroup var options: StoreOptions
    @Option(help: "Who revokes (for the audit).") var actor = "admin"

    func execute() async throws {
        var targets: [(Revocation.Kind, String)] = []
        if let identity { targets.append((.identity, identity)) }
        if let certificate {
            let cert: Certificate
            do { cert = try Certificate.leaf(pemEncoded: try String(contentsOfFile: certificate, encoding: .utf8)) } catch {
                throw ValidationError("--certificate: \(certificate) is not a readable PEM certificate")
            }
            targets.append((.sha256, ConnectionGuard.references(cert).fingerprint))
        }
        for (value, kind, digits) in [(sha256, Revocation.Kind.sha256, 64), (serial, .serial, 40)] {
            guard let value else { continue }
            let hex = value.lowercased().filter { $0 != ":" }
            guard !hex.isEmpty, hex.count <= digits, hex.allSatisfy(\.isHexDigit) else {
                throw ValidationError("--\(kind.rawValue): '\(value)' is not a hexadecimal \(kind == .sha256 ? "SHA-256 fingerprint" : "serial number")")
            }
            targets.append((kind, hex))
        }
        guard targets.count == 1, let (kind, value) = targets.first else {
            throw ValidationError("name exactly one of --identity, --certificate, --sha256 and --serial")
        }
        let backend = try await options.service()
        try await backend.revoke(Revocation(kind: kind, value: value, reason: reason, revokedAt: Date()), actor: actor)
        print("revoked \(kind == .identity ? "identity" : "certificate") \(kind == .identity ? value : "\(kind.rawValue) \(value)")")
    }
}
