import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// A PostgreSQL URL as FedGate reads it, for the stores and a silo's data source:
/// `postgres://user@host:port/database?sslmode=verify-full&sslrootcert=/etc/fedgate/db-ca.pem&password_file=/etc/fedgate/db-password`.
///
/// - `sslmode`: `disable` (the default: loopback or a private network only), `verify-full` (TLS; the
///   server's certificate must chain to `sslrootcert` and name the host dialled) or `verify-ca` (TLS;
///   the chain only, for a server reached by an address its certificate does not name). `require`
///   and `prefer` (TLS without checking the server) are refused: they stop only a passive listener.
/// - `password_file`: the role's password, read from a file (mode 0600), so it is on no command
///   line and in no log. A password written in the URL itself still works, for tests.
public struct PostgresURL: Sendable {
    public let host: String
    public let port: Int
    public let user: String
    public let database: String?
    public let tls: Bool
    let configuration: PostgresClient.Configuration
    /// The same server, for one connection (`check`).
    let single: PostgresConnection.Configuration

    public enum Problem: Error, Sendable, CustomStringConvertible {
        case malformed(String)
        public var description: String { switch self { case .malformed(let text): text } }
    }

    public init(_ url: String) throws {
        guard let u = URLComponents(string: url), u.scheme == "postgres" || u.scheme == "postgresql", let host = u.host, !host.isEmpty, let user = u.user else {
            throw Problem.malformed("'\(Self.redacted(url))' is not a postgres://user@host:port/database URL")
        }
        var parameters: [String: String] = [:]
        for item in u.queryItems ?? [] {
            guard ["sslmode", "sslrootcert", "password_file"].contains(item.name), let value = item.value, !value.isEmpty else {
                throw Problem.malformed("'\(item.name)' in a PostgreSQL URL: FedGate reads sslmode, sslrootcert and password_file, each with a value")
            }
            parameters[item.name] = value
        }
        var password = u.password
        if let file = parameters["password_file"] {
            do { password = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .newlines) } catch {
                throw Problem.malformed("password_file \(file) cannot be read; it holds the database role's password (mode 0600)")
            }
        }
        let tls: PostgresClient.Configuration.TLS
        var singleTLS = PostgresConnection.Configuration.TLS.disable
        switch parameters["sslmode"] ?? "disable" {
        case "disable":
            guard parameters["sslrootcert"] == nil else { throw Problem.malformed("sslrootcert goes with sslmode=verify-full or verify-ca") }
            tls = .disable
        case let mode where mode == "verify-full" || mode == "verify-ca":
            guard let root = parameters["sslrootcert"] else {
                throw Problem.malformed("sslmode=\(mode) needs sslrootcert=PATH, the CA that signed the database server's certificate")
            }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            do { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root)) } catch {
                throw Problem.malformed("sslrootcert \(root) is not a readable PEM certificate")
            }
            if mode == "verify-full" {
                var v4 = in_addr(), v6 = in6_addr()
                guard inet_pton(AF_INET, host, &v4) != 1, inet_pton(AF_INET6, host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), &v6) != 1 else {
                    throw Problem.malformed("sslmode=verify-full checks the server's certificate names the host dialled: give its name, not the address \(host) (or use verify-ca)")
                }
            }
            configuration.certificateVerification = mode == "verify-full" ? .fullVerification : .noHostnameVerification
            tls = .require(configuration)
            do { singleTLS = .require(try NIOSSLContext(configuration: configuration)) } catch {
                throw Problem.malformed("sslrootcert \(root): \(error)")
            }
        case let mode:
            throw Problem.malformed("sslmode=\(mode): use verify-full (or verify-ca), which check the server's certificate, or disable on a private network")
        }
        let path = String(u.path.dropFirst())
        var configuration = PostgresClient.Configuration(host: host, port: u.port ?? 5432, username: user, password: password,
                                                         database: path.isEmpty ? nil : path, tls: tls)
        var single = PostgresConnection.Configuration(host: host, port: u.port ?? 5432, username: user, password: password,
                                                      database: path.isEmpty ? nil : path, tls: singleTLS)
        if parameters["sslmode"] == "verify-full" {
            configuration.options.tlsServerName = host
            single.options.tlsServerName = host
        }
        self.single = single
        (self.host, self.port, self.user, database, self.configuration) = (host, u.port ?? 5432, user, path.isEmpty ? nil : path, configuration)
        self.tls = parameters["sslmode"].map { $0 != "disable" } ?? false
    }

    /// The URL with any password replaced, for messages.
    public static func redacted(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "…"
        return u.string ?? "(a PostgreSQL URL)"
    }

    /// Opens one connection and asks the server one question, so a wrong CA, a refused plain
    /// connection or a bad password fails at once with the server's or the TLS layer's reason (a
    /// pool would keep retrying). What `fedgate doctor` runs.
    public func check(logger: Logger = Logger(label: "fedgate.store.check")) async throws {
        let connection: PostgresConnection
        do { connection = try await PostgresConnection.connect(configuration: single, id: 1, logger: logger) } catch {
            throw Problem.malformed("\(host):\(port) refused the connection: \(Self.reason(error))")
        }
        do { try await connection.query("SELECT 1", logger: logger) } catch {
            try? await connection.close()
            throw Problem.malformed("\(host):\(port) answered with an error: \(Self.reason(error))")
        }
        try await connection.close()
    }

    /// What went wrong, in the server's words or the TLS layer's (PostgresNIO's own description
    /// hides both; neither holds the password).
    public static func reason(_ error: any Error) -> String {
        guard let e = error as? PSQLError else { return "\(error)" }
        if let message = e.serverInfo?[.message] { return message }
        if let underlying = e.underlying { return "\(underlying)" }
        return "\(e.code)"
    }
}
