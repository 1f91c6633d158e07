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
    static func make(port: Int) throws -> PrivatePostgres? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending }).last,
              FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/initdb") else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must run the PostgreSQL restart test: no server in /usr/lib/postgresql") }
            return nil
        }
        return try PrivatePostgres(bin: URL(fileURLWithPath: "/usr/lib/postgresql/\(version)/bin"), port: port)
    }

    private init(bin: URL, port: Int) throws {
        self.bin = bin
        self.port = port
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if getuid() == 0 { try run("/bin/chown", ["postgres:", folder.path], asPostgres: false) }
        try run(bin.appendingPathComponent("initdb").path, ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        try start()
        try run(bin.appendingPathComponent("createdb").path, ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "fedgate"])
    }

    private var data: String { folder.appendingPathComponent("data").path }

    func start() throws {
        try run(bin.appendingPathComponent("pg_ctl").path, ["-D", data, "-l", folder.appendingPathComponent("server.log").path, "-w", "-t", "60",
                                                           "-o", "-h 127.0.0.1 -p \(port) -k \(folder.path) -c fsync=off", "start"])
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
