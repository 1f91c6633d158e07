import Crypto
import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateStore
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import X509

/// What `fedgate doctor` found about one part of a gateway's setup, and what to do about it.
struct Finding: Sendable, Equatable {
    enum Status: String, Sendable { case ok, warning, failure }
    let status: Status
    let check: String
    let detail: String
    /// What to do (nil when nothing needs doing).
    let remedy: String?

    static func ok(_ check: String, _ detail: String) -> Finding { Finding(status: .ok, check: check, detail: detail, remedy: nil) }
    static func warning(_ check: String, _ detail: String, _ remedy: String) -> Finding { Finding(status: .warning, check: check, detail: detail, remedy: remedy) }
    static func failure(_ check: String, _ detail: String, _ remedy: String) -> Finding { Finding(status: .failure, check: check, detail: detail, remedy: remedy) }

    var line: String {
        let mark = switch status { case .ok: "ok  "; case .warning: "warn"; case .failure: "FAIL" }
        return "\(mark) \(check): \(detail)" + (remedy.map { "\n       → \($0)" } ?? "")
    }
}

/// A gateway's setup checked part by part, each failure with its fix: the config, the certificate
/// (readable, its key, the chain to the CA, validity now), the policy, the data, the store, and the
/// broker (the name resolves, TCP connects, the mutual-TLS handshake and who the broker says this
/// silo is, and the clock against the broker's). Nothing is written anywhere.
enum Doctor {
    /// `now`: the time certificates are checked at; `local`: this host's clock, read around the
    /// broker's answer (a test sets both to see a skew).
    static func gateway(config path: String, timeout: Duration, now: Date = Date(), local: @escaping @Sendable () -> Date = { Date() }) async -> [Finding] {
        let c: GatewayConfig
        do { c = try GatewayConfig.load(URL(fileURLWithPath: path)) } catch {
            return [.failure("config", "\(error)", "fix the field named, then run fedgate doctor again")]
        }
        var findings: [Finding] = [.ok("config", "\(path) reads: silo \(c.silo), broker \(c.brokerHost):\(c.brokerPort) as '\(c.brokerName)'")]
        let credentials = await certificate(c.tls, id: c.silo, role: .silo, renewBeforeDays: c.renewBeforeDays, now: now, into: &findings)
        findings.append(policy(c))
        findings.append(await data(c, path))
        findings.append(await store(c.store))
        guard let credentials, let address = resolve(c.brokerHost, into: &findings) else { return findings }
        findings.append(tcp(address, c, timeout: timeout))
        if findings.last?.status == .ok { findings += await broker(c, credentials, timeout: timeout, local: local) }
        return findings
    }

    /// The certificate, its key and chain, checked now; the credentials when they can open a connection.
    static func certificate(_ tls: TLSPaths, id: String, role: Identity.Role, renewBeforeDays: Double, now: Date,
                            into findings: inout [Finding]) async -> TLSCredentials? {
        let credentials: TLSCredentials
        do { credentials = try TLSCredentials(certificate: tls.certificate, key: tls.key, ca: tls.ca) } catch {
            findings.append(.failure("certificate", "\(error)", "check tls.certificate, tls.key and tls.ca in the config (paths are relative to its folder)"))
            return nil
        }
        do {
            let chain = try Certificate.chain(pemEncoded: credentials.certificatePEM)
            let key = try P256.Signing.PrivateKey(pemRepresentation: credentials.keyPEM)
            guard chain[0].publicKey == Certificate.PublicKey(key.publicKey) else {
                findings.append(.failure("certificate", "\(tls.key.path) is not the key of \(tls.certificate.path)",
                                         "install the key the certificate was issued for (a renewal writes both together)"))
                return nil
            }
            let root = try Certificate(pemEncoded: credentials.caPEM)
            let issuer = chain.count > 1 ? chain[1].subject : chain[0].issuer
            let verified: Result<Identity, Error>
            do { verified = .success(try await ConsortiumCA.identity(of: chain[0], trusting: root, intermediates: Array(chain.dropFirst()), at: now)) } catch {
                verified = .failure(error)
            }
            switch verified {
            case .failure(let error):
                let expired = now > chain[0].notValidAfter, early = now < chain[0].notValidBefore
                let remedy = expired ? "it expired \(chain[0].notValidAfter): ask the operator for a new one (fedgate gateway enroll or silo approve); the gateway renews only while it is valid"
                    : early ? "it is valid only from \(chain[0].notValidBefore): check this host's clock"
                    : "tls.ca must be the consortium's root ca.pem, and the certificate one it issued (this one names '\(issuer)' as issuer)"
                findings.append(.failure("certificate", "\(error)", remedy))
                return nil
            case .success(let identity):
                guard identity.id == id, identity.role == role else {
                    findings.append(.failure("certificate", "it is \(identity)'s, the config is \(role.rawValue) '\(id)'", "install this \(role.rawValue)'s certificate and key"))
                    return nil
                }
                let left = chain[0].notValidAfter.timeIntervalSince(now)
                if left < renewBeforeDays * 86_400 {
                    findings.append(.warning("certificate", "\(identity), expires \(chain[0].notValidAfter) (in \(Int(left / 3600)) h)",
                                             role == .silo ? "the gateway renews it from the broker while it runs; if it cannot reach the broker, ask the operator"
                                                 : "a broker does not renew its own certificate: issue a new one (fedgate ca issue) and restart it before then"))
                } else {
                    findings.append(.ok("certificate", "\(identity), chains to the CA\(chain.count > 1 ? " through '\(chain[1].subject)'" : ""), valid until \(chain[0].notValidAfter)"))
                }
                return credentials
            }
        } catch {
            findings.append(.failure("certificate", "\(error)", "check tls.certificate, tls.key and tls.ca hold PEM files"))
            return nil
        }
    }

    static func policy(_ c: GatewayConfig) -> Finding {
        do {
            let policy = try SiloPolicy.load(c.policy)
            guard policy.silo == c.silo else {
                return .failure("policy", "\(c.policy.path) is silo '\(policy.silo)''s, the gateway is '\(c.silo)'", "point policy: at this silo's policy file")
            }
            guard policy.datasets[c.dataset] != nil else {
                return .failure("policy", "\(c.policy.path) has no rules for data set '\(c.dataset)'", "add datasets.\(c.dataset) to the policy: without it every plan is refused")
            }
            return .ok("policy", "\(c.policy.path) reads; data set '\(c.dataset)' has rules")
        } catch {
            return .failure("policy", "\(error)", "fix the field named (fedgate policy check shows the same)")
        }
    }

    static func data(_ c: GatewayConfig, _ path: String) async -> Finding {
        do {
            let tables = try await SiloExport.tables(c, config: path)
            return .ok("data", tables.map { "\($0.source): \($0.rows.count) rows, \($0.header.count) columns" }.joined(separator: "; "))
        } catch {
            return .failure("data", FedGateCommand.message(for: error), "fix the export or dataset: in the config; fedgate data profile shows what a plan would read")
        }
    }

    static func store(_ url: String) async -> Finding {
        if url.hasPrefix("sqlite:"), !FileManager.default.fileExists(atPath: String(url.dropFirst("sqlite:".count))) {
            return .warning("store", "\(url) does not exist yet", "the service creates it (mode 0600) when it starts; a silo registers budgets and consents in it first (fedgate ledger register, consent add)")
        }
        if !url.hasPrefix("sqlite:") {
            do { try await PostgresURL(url).check() } catch {
                return .failure("store", "\(error)", "check the database runs, and store: in the config (its sslmode=verify-full and sslrootcert, "
                                + "the role and its password_file)")
            }
        }
        do {
            let store = try openStore(url)
            let tail = try await store.auditTail()
            return .ok("store", "\(url.hasPrefix("sqlite:") ? url : "PostgreSQL") answers; audit trail at record \(tail?.seq ?? 0)")
        } catch LedgerError.unavailable(let reason) {
            return .failure("store", "cannot be reached: \(reason)", "start the database, or fix store: in the config")
        } catch {
            return .warning("store", "\(error)", "the service creates its tables when it starts (or run fedgate db migrate --store …)")
        }
    }
}
