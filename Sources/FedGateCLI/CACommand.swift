import ArgumentParser
import FedGatePKI
import Foundation
import X509

/// `fedgate ca …` and `fedgate enroll`: the consortium PKI, without shelling out to openssl.
struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ca", abstract: "Run the consortium certificate authority.",
                                                    subcommands: [Init.self, Intermediate.self, Issue.self, Identify.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a consortium CA: a P-256 key (ca-key.pem, mode 0600) and a self-signed certificate (ca.pem).")
        @Option(help: "Folder to write the CA into.") var out: String
        @Option(help: "Validity in years.") var years = 10

        func run() throws {
            guard (1...30).contains(years) else { throw ValidationError("--years must be 1 to 30, got \(years)") }
            let dir = URL(fileURLWithPath: out)
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("ca-key.pem").path) {
                throw ValidationError("--out: \(out) already holds a CA key; refusing to overwrite it")
            }
            let ca = try ConsortiumCA.create(years: years)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try writeSecret(ca.keyPEM, to: dir.appendingPathComponent("ca-key.pem"))
            try ca.certificatePEM.write(to: dir.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
            print("consortium CA written to \(out) (certificate sha256 \(try ca.certificate.sha256Fingerprint))")
        }
    }

    struct Intermediate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an intermediate CA signed by the root, for a broker's `issuing:` (the root's key then stays offline).",
            discussion: """
            Writes ca.pem (the intermediate's certificate) and ca-key.pem (mode 0600) into --out: point the
            broker's `issuing: { ca: FOLDER }` at that folder. Certificates it issues are written with the
            intermediate after them (the chain); every party keeps trusting only the root's ca.pem.
            """)
        @Option(help: "The root CA folder (ca.pem, ca-key.pem).") var ca: String
        @Option(help: "Folder to write the intermediate CA into.") var out: String
        @Option(help: "The intermediate's name (its certificate's common name).") var name = "FedGate broker issuing CA"
        @Option(help: "Validity in days (at most the root's remaining life).") var days = 365

        func run() throws {
            let root = try loadCA(ca)
            let dir = URL(fileURLWithPath: out)
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("ca-key.pem").path) {
                throw ValidationError("--out: \(out) already holds a CA key; refusing to overwrite it")
            }
            let intermediate: ConsortiumCA
            do { intermediate = try root.intermediate(name: name, days: days) } catch let e as PKIError { throw ValidationError("--ca: \(e.description)") }
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try writeSecret(intermediate.keyPEM, to: dir.appendingPathComponent("ca-key.pem"))
            try intermediate.certificatePEM.write(to: dir.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
            print("intermediate CA written to \(out), valid until \(intermediate.certificate.notValidAfter) "
                  + "(certificate sha256 \(try intermediate.certificate.sha256Fingerprint)); keep the root's key offline")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a CSR into a short-lived certificate (its subject names the identity).")
        @Option(help: "The CA folder (ca.pem, ca-key.pem).") var ca: String
        @Option(help: "The CSR (PEM).") var csr: String
        @Option(help: "Validity in days (1–90).") var days = 7
        @Option(help: "A host name or IP address the service is also reached by (a broker's real name), repeatable.") var san: [String] = []
        @Option(help: "Where to write the certificate (PEM).") var out: String

        func run() throws {
            let authority = try loadCA(ca)
            let request: CertificateSigningRequest
            do { request = try CertificateSigningRequest(pemEncoded: try String(contentsOfFile: csr, encoding: .utf8)) } catch {
                throw ValidationError("--csr: \(csr) is not a PEM certificate signing request")
            }
            do {
                let cert = try authority.issue(request, days: days, alternativeNames: san)
                try authority.chainPEM(cert).write(toFile: out, atomically: true, encoding: .utf8)
                print("issued \(try Identity(subject: cert.subject)) until \(cert.notValidAfter) (sha256 \(try cert.sha256Fingerprint))")
            } catch let e as PKIError { throw ValidationError(e.description) }
        }
    }

    struct Identify: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Verify a certificate against the CA and print the identity it carries.")
        @Option(help: "The CA folder.") var ca: String
        @Argument(help: "The certificate (PEM).") var certificate: String

        func execute() async throws {
            let authority = try loadCA(ca)
            let chain: [Certificate]
            do { chain = try Certificate.chain(pemEncoded: try String(contentsOfFile: certificate, encoding: .utf8)) } catch {
                throw ValidationError("\(certificate) is not a PEM certificate (or one followed by its intermediate CA)")
            }
            do { print(try await authority.identity(of: chain[0], intermediates: Array(chain.dropFirst()))) } catch let e as PKIError {
                throw ValidationError(e.description)
            }
        }
    }
}

/// `fedgate enroll`: a new private key that stays here, and the CSR to send to the CA.
struct EnrollCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enroll", abstract: "Make a private key (key.pem, mode 0600) and a CSR (csr.pem) for an identity.")
    @Option(help: "The silo, broker or person id.") var id: String
    @Option(help: "silo, broker, admin, monitor (reads /metrics only), data-scientist or compliance-officer.") var role: String
    @Option(help: "Region (silos and brokers).") var region: String?
    @Option(help: "Folder to write into.") var out: String

    func run() throws {
        guard let r = Identity.Role(rawValue: role) else {
            throw ValidationError("--role: '\(role)' is not one of \(Identity.Role.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let identity: Identity
        do { identity = try Identity(id: id, role: r, region: region) } catch let e as PKIError { throw ValidationError(e.description) }
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let request = try EnrollmentRequest(identity: identity)
        try writeSecret(request.keyPEM, to: dir.appendingPathComponent("key.pem"))
        try request.csrPEM.write(to: dir.appendingPathComponent("csr.pem"), atomically: true, encoding: .utf8)
        print("key and CSR for \(identity) written to \(out); send csr.pem to the consortium operator")
    }
}

func loadCA(_ folder: String) throws -> ConsortiumCA {
    let dir = URL(fileURLWithPath: folder)
    do {
        return try ConsortiumCA(certificatePEM: try String(contentsOf: dir.appendingPathComponent("ca.pem"), encoding: .utf8),
                                keyPEM: try String(contentsOf: dir.appendingPathComponent("ca-key.pem"), encoding: .utf8))
    } catch let e as PKIError { throw ValidationError("--ca: \(e.description)") } catch {
        throw ValidationError("--ca: cannot read ca.pem and ca-key.pem in \(folder)")
    }
}
