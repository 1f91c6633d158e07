import ArgumentParser
import FedGatePKI
import FedGateServices
import FedGateStore
import Foundation
import X509

/// `fedgate silo invite|approve|enrol|revoke`: the consortium operator's enrolment and revocation
/// of silos. A broker serves only enrolled silos.
struct SiloCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "silo", abstract: "Enrol or revoke silos at the broker.",
                                                    subcommands: [Invite.self, Approve.self, Enrol.self, Revoke.self])

    struct Invite: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Issue a one-time enrolment token for a silo (shown once; the store keeps only its hash).")
        @Argument(help: "The silo id.") var id: String
        @Option(help: "The silo's region (bound into its certificate).") var region: String
        @Option(help: "The silo's jurisdiction (residency).") var jurisdiction: String
        @Option(help: "Hours the token stays valid.") var hours = 24
        @OptionGroup var options: StoreOptions
        @Option(help: "Who invites (for the audit).") var actor = "admin"

        func execute() async throws {
            guard (1...720).contains(hours) else { throw ValidationError("--hours must be 1 to 720") }
            do { _ = try Identity(id: id, role: .silo, region: region) } catch let e as PKIError { throw ValidationError(e.description) }
            let backend = try await options.service()
            let token = Enrolment.newToken()
            let now = Date()
            try await backend.invite(EnrolmentInvitation(silo: id, region: region, jurisdiction: jurisdiction, tokenSHA256: Enrolment.hash(token),
                                                         createdAt: now, expiresAt: now.addingTimeInterval(Double(hours) * 3600)), actor: actor)
            print(token)
            FileHandle.standardError.write(Data("one-time token for silo \(id), valid \(hours) h: give it to the silo's admin over a trusted channel\n".utf8))
        }
    }

    struct Approve: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Sign a silo's CSR with the consortium CA and enrol it in the broker's store.")
        @Argument(help: "The silo id the CSR must carry.") var id: String
        @Option(help: "The silo's CSR (PEM).") var csr: String
        @Option(help: "The CA folder (ca.pem, ca-key.pem).") var ca: String
        @OptionGroup var options: StoreOptions
        @Option(help: "The silo's jurisdiction (residency).") var jurisdiction: String
        @Option(help: "Validity in days (1–90).") var days = 7
        @Option(help: "Where to write the certificate (PEM).") var out: String
        @Option(help: "Who approves (for the audit).") var actor = "admin"

        func execute() async throws {
            let authority = try loadCA(ca)
            let request: CertificateSigningRequest
            do { request = try CertificateSigningRequest(pemEncoded: try String(contentsOfFile: csr, encoding: .utf8)) } catch {
                throw ValidationError("--csr: \(csr) is not a readable PEM CSR: \(error)")
            }
            let identity: Identity
            do { identity = try Identity(subject: request.subject) } catch let e as PKIError { throw ValidationError("--csr: \(e)") }
            guard identity.id == id else { throw ValidationError("--csr: the CSR asks for '\(identity.id)', not '\(id)'") }
            guard identity.role == .silo else { throw ValidationError("--csr: the CSR is for a \(identity.role.rawValue), not a silo") }
            let certificate: Certificate
            do { certificate = try authority.issue(request, days: days) } catch let e as PKIError { throw ValidationError(e.description) }
            let backend = try await options.service()
            try await backend.enroll(Party(id: id, kind: .silo, region: identity.region ?? "", jurisdiction: jurisdiction,
                                           certificateSHA256: try certificate.sha256Fingerprint, enrolledAt: Date()), actor: actor)
            try authority.chainPEM(certificate).write(toFile: out, atomically: true, encoding: .utf8)
            print("silo \(id) approved: certificate valid until \(certificate.notValidAfter) written to \(out)")
        }
    }

    struct Enrol: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Enrol a silo whose certificate the consortium CA already issued (checked against ca.pem; its region is the certificate's).")
        @Argument(help: "The silo id the certificate must carry.") var id: String
        @Option(help: "The silo's certificate (PEM).") var certificate: String
        @Option(help: "The consortium CA certificate (PEM) it must be issued by.") var ca: String
        @Option(help: "The silo's jurisdiction (residency).") var jurisdiction: String
        @OptionGroup var options: StoreOptions
        @Option(help: "Who enrols (for the audit).") var actor = "admin"

        func execute() async throws {
            let chain: [Certificate], root: Certificate
            do { chain = try Certificate.chain(pemEncoded: try String(contentsOfFile: certificate, encoding: .utf8)) } catch {
                throw ValidationError("--certificate: \(certificate) is not a readable PEM certificate")
            }
            let cert = chain[0]
            do { root = try Certificate(pemEncoded: try String(contentsOfFile: ca, encoding: .utf8)) } catch {
                throw ValidationError("--ca: \(ca) is not a readable PEM certificate")
            }
            let identity: Identity
            do { identity = try await ConsortiumCA.identity(of: cert, trusting: root, intermediates: Array(chain.dropFirst())) } catch let e as PKIError { throw ValidationError("--certificate: \(e)") }
            guard identity.id == id, identity.role == .silo else {
                throw ValidationError("--certificate: it is for \(identity), not silo '\(id)'")
            }
            let backend = try await options.service()
            try await backend.enroll(Party(id: id, kind: .silo, region: identity.region ?? "", jurisdiction: jurisdiction,
                                           certificateSHA256: try cert.sha256Fingerprint, enrolledAt: Date()), actor: actor)
            print("silo \(id) enrolled in \(identity.region ?? "") (\(jurisdiction))")
        }
    }

    struct Revoke: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a silo: a running broker refuses its next handshake and closes its open connections within a second.")
        @Argument(help: "The silo id.") var id: String
        @OptionGroup var options: StoreOptions
        @Option(help: "Why (kept in the audit trail).") var reason = "revoked by the operator"
        @Option(help: "Who revokes (for the audit).") var actor = "admin"

        func execute() async throws {
            let backend = try await options.service()
            guard try await backend.party(id)?.kind == .silo else {
                throw ValidationError("no enrolled silo '\(id)'; to revoke a person or one certificate use: fedgate revoke --identity \(id) (or --certificate, --sha256, --serial)")
            }
            try await backend.revoke(Revocation(kind: .identity, value: id, reason: reason, revokedAt: Date()), actor: actor)
            print("silo \(id) revoked")
        }
    }
}

