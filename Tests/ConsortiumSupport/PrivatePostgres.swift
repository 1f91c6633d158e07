import Foundation
import Testing

/// A PostgreSQL server of a test's own (the shared test cluster serves other tests, which a
/// restart would disturb): initdb in a temporary folder, started, stopped and restarted on demand.
/// As root the server runs as the `postgres` user, as `scripts/pg-test-cluster.sh` does.
final class PrivatePostgres: @unchecked Sendable {
    let folder: URL
    let port: Int
    let bin: URL
    var url: String { "postgres://postgres@127.0.0.1:\(port)/fedgate" }

    /// nil when no PostgreSQL server is installed (a failure under CI, where one must be).
    /// `tls`: the server's certificate chain and key (PEM); the server then serves TLS only (plain
    /// connections are rejected by its pg_hba.conf).
    static func make(port: Int, tls: (certificate: String, key: String)? = nil) throws -> PrivatePostgres? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending }).last,
              FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/initdb") else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must run the PostgreSQL restart test: no server in /usr/lib/postgresql") }
            return nil
        }
        return try PrivatePostgres(bin: URL(fileURLWithPath: "/usr/lib/postgresql/\(version)/bin"), port: port, tls: tls)
    }

    private let tls: Bool

    private init(bin: URL, port: Int, tls: (certificate: String, key: String)?) throws {
        self.tls = tls != nil
        self.bin = bin
        self.port = port
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if getuid() == 0 { try run("/bin/chown", ["postgres:", folder.path], asPostgres: false) }
        try run(bin.appendingPathComponent("initdb").path, ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        if let tls {
            let dir = URL(fileURLWithPath: data)
            try tls.certificate.write(to: dir.appendingPathComponent("server.crt"), atomically: true, encoding: .utf8)
            try tls.key.write(to: dir.appendingPathComponent("server.key"), atomically: true, encoding: .utf8)
            try "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\nhostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n"
                .write(to: dir.appendingPathComponent("pg_hba.conf"), atomically: true, encoding: .utf8)
            if getuid() == 0 { try run("/bin/chown", ["-R", "postgres:", data], asPostgres: false) }
            try run("/bin/chmod", ["600", dir.appendingPathComponent("server.key").path])
        }
        try start()
        try run(bin.appendingPathComponent("createdb").path, ["-h", folder.path, "-p", "\(port)", "-U", "postgres", "fedgate"])
    }

    private var data: String { folder.appendingPathComponent("data").path }

    func start() throws {
        try run(bin.appendingPathComponent("pg_ctl").path, ["-D", data, "-l", folder.appendingPathComponent("server.log").path, "-w", "-t", "60",
                                                           "-o", "-h 127.0.0.1 -p \(port) -k \(folder.path) -c fsync=off" + (tls ? " -c ssl=on" : ""), "start"])
    }

    /// Fast shutdown: open transactions are rolled back and their clients told the server is going away.
    func stop() throws { try run(bin.appendingPathComponent("pg_ctl").path, ["-D", data, "-m", "fast", "-w", "stop"]) }

    func remove() {
        try? stop()
        try? FileManager.default.removeItem(at: folder)
    }

    /// Runs a tool through the shell's `system` (which waits for its own child: Foundation's
    /// `Process` never saw `pg_ctl start` end here, the server it leaves behind being a daemon).
    private func run(_ tool: String, _ arguments: [String], asPostgres: Bool = true) throws {
        func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let log = folder.appendingPathComponent("tool.log").path
        var command = ([tool] + arguments).map(quoted).joined(separator: " ")
        if asPostgres && getuid() == 0 { command = "/usr/sbin/runuser -u postgres -- " + command }
        let status = system(command + " >" + quoted(log) + " 2>&1 </dev/null")
        guard status == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "\(tool) \(arguments.joined(separator: " ")): \(output)"])
        }
    }
}
