import ArgumentParser
import FedGatePolicy
import FedGateProto
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// The broker, as a gateway reaches it: DNS, TCP, the mutual-TLS handshake, and the clocks.
extension Doctor {
    /// The broker's first address, or nil (a failure recorded) when its name does not resolve.
    static func resolve(_ host: String, into findings: inout [Finding]) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        defer { if result != nil { freeaddrinfo(result) } }
        guard status == 0, let first = result else {
            findings.append(.failure("broker DNS", "'\(host)' does not resolve (\(String(cString: gai_strerror(status))))",
                                     "check broker.host in the config and this host's DNS (getent hosts \(host))"))
            return nil
        }
        var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        getnameinfo(first.pointee.ai_addr, first.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST)
        let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        findings.append(.ok("broker DNS", "\(host) is \(address)"))
        return address
    }

    /// Whether a TCP connection to the broker's port opens within `timeout`.
    static func tcp(_ address: String, _ c: GatewayConfig, timeout: Duration) -> Finding {
        guard let (target, length, family) = socketAddress(address, c.brokerPort) else {
            return .failure("broker TCP", "'\(address)' is not an address", "check broker.host in the config")
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure("broker TCP", "no socket: \(String(cString: strerror(errno)))", "check this host's limits (ulimit -n)") }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let started = withUnsafePointer(to: target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) } }
        var failure: Int32 = started == 0 ? 0 : errno
        if started != 0, errno == EINPROGRESS {
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ms = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            if poll(&poller, 1, ms) == 1 {
                var size = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &size)
            } else {
                failure = ETIMEDOUT
            }
        }
        guard failure == 0 else {
            let why = failure == ECONNREFUSED ? "refused: nothing listens there" : failure == ETIMEDOUT ? "no answer within \(timeout)" : String(cString: strerror(failure))
            return .failure("broker TCP", "\(address):\(c.brokerPort) \(why)",
                            "check the broker runs and listens on that port, and that a firewall or egress proxy lets this host reach it")
        }
        return .ok("broker TCP", "\(address):\(c.brokerPort) accepts connections")
    }

    /// An IPv4 or IPv6 address and port as a socket address, its length and family (nil: not an address).
    static func socketAddress(_ address: String, _ port: Int) -> (sockaddr_storage, socklen_t, Int32)? {
        var storage = sockaddr_storage()
        if address.contains(":") {
            var a = sockaddr_in6(); a.sin6_family = sa_family_t(AF_INET6); a.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, address, &a.sin6_addr) == 1 else { return nil }
            withUnsafeBytes(of: a) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size), AF_INET6)
        }
        var a = sockaddr_in(); a.sin_family = sa_family_t(AF_INET); a.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, address, &a.sin_addr) == 1 else { return nil }
        withUnsafeBytes(of: a) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_in>.size), AF_INET)
    }

    /// The mutual-TLS handshake and the broker's answer to who this silo is, and its clock against ours.
    static func broker(_ c: GatewayConfig, _ credentials: TLSCredentials, timeout: Duration, local: @Sendable () -> Date) async -> [Finding] {
        do {
            let transport = try FedGateTransports.client(host: c.brokerHost, port: c.brokerPort, serverName: c.brokerName, credentials: credentials,
                                                         requestTimeout: timeout)
            let sent = local()
            let me = try await withGRPCClient(transport: transport) { try await Fedgate_V1_Broker.Client(wrapping: $0).whoAmI(Fedgate_V1_WhoAmIRequest()) }
            let received = local()
            var findings: [Finding] = [.ok("broker TLS", "mutual TLS 1.3 with '\(c.brokerName)'; the broker knows this silo as \(me.id) (\(me.role))")]
            if me.brokerTimeMs > 0 {
                let local = (sent.timeIntervalSince1970 + received.timeIntervalSince1970) / 2
                let offset = Double(me.brokerTimeMs) / 1000 - local
                let round = received.timeIntervalSince(sent)
                let text = String(format: "%+.1f s against the broker's (±%.1f s)", -offset, round / 2)
                if abs(offset) > 60 + round {
                    findings.append(.failure("clock", "this host's clock is \(text)",
                                             "certificates and round deadlines depend on it: run NTP on this host (timedatectl set-ntp true) or ask the broker's operator to"))
                } else if abs(offset) > 5 + round {
                    findings.append(.warning("clock", "this host's clock is \(text)", "run NTP on this host (timedatectl set-ntp true)"))
                } else {
                    findings.append(.ok("clock", "this host's clock is \(text)"))
                }
            }
            return findings
        } catch {
            let text = "\(error)"
            let remedy = text.contains("CERTIFICATE") || text.contains("certificate")
                ? "the broker refused this certificate or this host refused the broker's: a revoked or unenrolled silo, another consortium's CA, or broker.name not among the broker certificate's names; ask the operator"
                : "check broker.host, broker.port and broker.name in the config, and the broker's log"
            return [.failure("broker TLS", String(text.prefix(400)), remedy)]
        }
    }
}

/// `fedgate doctor`: a gateway's setup checked before it runs, each problem with what to do.
struct DoctorCommand: AsyncParsableCommand, AsyncExecutable {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check a gateway's setup (config, certificate and chain, policy, data, store, the broker over DNS, TCP and mutual TLS, the clock) or a broker's.",
        discussion: "Reads, never writes. Prints one line per check, with what to do for each problem. Exit status: 0 all passed (warnings allowed), 1 a check failed.")

    @Option(help: "A gateway's config (gateway.yaml).") var config: String?
    @Option(help: "A broker's config (broker.yaml): certificate, issuing CA, store, ports.") var brokerConfig: String?
    @Option(help: "Seconds to wait for the broker.") var timeout: Double = 10

    func execute() async throws {
        guard timeout > 0, timeout <= 300 else { throw ValidationError("--timeout must be from 0 to 300 seconds") }
        guard (config == nil) != (brokerConfig == nil) else { throw ValidationError("give --config (a gateway's) or --broker-config (a broker's)") }
        let findings = if let brokerConfig { await Doctor.broker(config: brokerConfig) }
            else { await Doctor.gateway(config: config ?? "", timeout: .milliseconds(Int64(timeout * 1000))) }
        print(findings.map(\.line).joined(separator: "\n"))
        let failed = findings.filter { $0.status == .failure }.count
        print(failed == 0 ? "all checks passed" : "\(failed) check\(failed == 1 ? "" : "s") failed")
        if failed > 0 { throw ExitCode(1) }
    }
}
