import FedGatePKI
import FedGatePolicy
import Foundation
import X509

/// A broker's setup checked before it serves: its config, certificate, the issuing CA (an
/// intermediate, so the root's key is not on this host), the store, and the ports it will listen on.
extension Doctor {
    static func broker(config path: String, now: Date = Date()) async -> [Finding] {
        let c: BrokerConfig
        do { c = try BrokerConfig.load(URL(fileURLWithPath: path)) } catch {
            return [.failure("config", "\(error)", "fix the field named, then run fedgate doctor again")]
        }
        var findings: [Finding] = [.ok("config", "\(path) reads: broker \(c.id), listening on \(c.host):\(c.port)")]
        _ = await certificate(c.tls, id: c.id, role: .broker, renewBeforeDays: 7, now: now, into: &findings)
        if let folder = c.issuingCA { findings.append(issuing(folder, root: c.tls.ca, days: c.certificateDays, now: now)) }
        findings.append(await store(c.store))
        findings.append(port(c.host, c.port, what: "listen"))
        if let enrolment = c.enrolmentPort { findings.append(port(c.host, enrolment, what: "enrolment_port")) }
        return findings
    }

    /// The CA the broker issues with: readable, an intermediate of the root the parties trust, valid.
    static func issuing(_ folder: URL, root rootFile: URL, days: Int, now: Date) -> Finding {
        let ca: ConsortiumCA
        do { ca = try loadCA(folder.path) } catch {
            return .failure("issuing", FedGateCommand.message(for: error), "issuing.ca must be a folder with ca.pem and ca-key.pem (fedgate ca intermediate --out)")
        }
        if ca.isRoot {
            return .warning("issuing", "the consortium's root key is on this host (\(folder.path))",
                            "make an intermediate (fedgate ca intermediate --ca ROOT --out issuing/), point issuing.ca at it and take the root's key offline")
        }
        guard let root = try? Certificate(pemEncoded: String(contentsOf: rootFile, encoding: .utf8)), ca.certificate.issuer == root.subject else {
            return .failure("issuing", "the intermediate '\(ca.certificate.subject)' was not issued by tls.ca's root",
                            "make the intermediate with the root the parties trust (fedgate ca intermediate --ca ROOT)")
        }
        let left = ca.certificate.notValidAfter.timeIntervalSince(now)
        guard left > Double(days) * 86_400 else {
            return .failure("issuing", "the intermediate expires \(ca.certificate.notValidAfter), before certificates it issues for \(days) days would",
                            "make a new intermediate (fedgate ca intermediate) and point issuing.ca at it")
        }
        return .ok("issuing", "intermediate '\(ca.certificate.subject)' under the root, valid until \(ca.certificate.notValidAfter)")
    }

    /// Whether the broker could listen on `host:port` now (nothing else holds it).
    static func port(_ host: String, _ port: Int, what: String) -> Finding {
        guard port != 0 else { return .ok(what, "\(host):0 (a port the system picks)") }
        guard let (target, length, family) = socketAddress(host == "localhost" ? "127.0.0.1" : host, port) else {
            return .failure(what, "'\(host)' is not an address to listen on", "give an IP address (0.0.0.0 for every interface)")
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(what, "no socket: \(String(cString: strerror(errno)))", "check this host's limits (ulimit -n)") }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else {
            let reason = errno == EADDRINUSE ? "something already listens there (another broker?)" : String(cString: strerror(errno))
            return .failure(what, "\(host):\(port): \(reason)", "stop what holds the port, or change \(what) in the config")
        }
        return .ok(what, "\(host):\(port) is free to listen on")
    }
}
