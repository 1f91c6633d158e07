import FedGatePrivacy
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// A store on a PostgreSQL server that serves TLS only (its pg_hba.conf rejects plain connections):
/// FedGate connects with `sslmode=verify-full` against the database's own CA, and refuses a server
/// it cannot verify.
@Suite("PostgreSQL over TLS", .serialized)
struct PostgresTLSTests {
    /// A CA and a server certificate for `localhost`, made with openssl as a database operator would.
    static func certificates(in folder: URL) throws -> (ca: URL, certificate: String, key: String) {
        let script = """
            set -e
            cd '\(folder.path)'
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=test database CA" 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
            printf 'subjectAltName=DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "openssl could not make the database's certificates")
        return (folder.appendingPathComponent("ca.pem"), try String(contentsOf: folder.appendingPathComponent("server.crt"), encoding: .utf8),
                try String(contentsOf: folder.appendingPathComponent("server.key"), encoding: .utf8))
    }

    @Test("verify-full against the database's CA connects and keeps the ledger; a plain connection, another CA and an address for verify-full are refused")
    func verifyFull() async throws {
        let consortium = try Consortium()
        let (ca, certificate, key) = try Self.certificates(in: consortium.folder)
        guard let pg = try PrivatePostgres.make(port: try Processes.freePort(), tls: (certificate, key)) else { return }
        defer { pg.remove() }
        let base = "postgres://postgres@localhost:\(pg.port)/fedgate"

        let store = try PostgresLedger(url: "\(base)?sslmode=verify-full&sslrootcert=\(ca.path)")
        defer { store.shutdown() }
        _ = try await store.applyMigrations(try Migration.load(from: Consortium.migrations))
        try await store.save(DatasetBudget(name: "penguins", delta: 1e-5, perPlanCap: 3), actor: "admin")
        #expect(try await store.budget("penguins")?.perPlanCap == 3)

        // One connection each (a pool would retry a refused one for a minute): the check doctor runs.
        func refusal(_ url: String) async -> String {
            do {
                try await PostgresURL(url).check()
                return "connected"
            } catch { return "\(error)" }
        }
        #expect(await refusal("\(base)?sslmode=verify-full&sslrootcert=\(ca.path)") == "connected")
        #expect(await refusal(base).contains("no encryption"), "the server rejects a connection without TLS")
        let rogue = consortium.folder.appendingPathComponent("rogue")
        try FileManager.default.createDirectory(at: rogue, withIntermediateDirectories: true)
        let (otherCA, _, _) = try Self.certificates(in: rogue)
        #expect(await refusal("\(base)?sslmode=verify-full&sslrootcert=\(otherCA.path)").contains("CERTIFICATE_VERIFY_FAILED"),
                "a server another CA vouches for is not trusted")
        #expect(await refusal("postgres://postgres@127.0.0.1:\(pg.port)/fedgate?sslmode=verify-full&sslrootcert=\(ca.path)").contains("give its name"))
        #expect(await refusal("\(base)?sslmode=require").contains("verify-full"))
    }

    @Test("the password comes from a file named in the URL, and a URL's password never reaches a message")
    func passwords() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-pgpw-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "s3cret\n".write(to: folder.appendingPathComponent("password"), atomically: true, encoding: .utf8)
        #expect(throws: Never.self) { try PostgresURL("postgres://reader@db.internal/research?password_file=\(folder.path)/password") }
        #expect { try PostgresURL("postgres://reader:s3cret@db.internal/research?sslmode=bogus") } throws: { !"\($0)".contains("s3cret") }
        #expect { try PostgresURL("postgres://reader@db.internal/research?password_file=/nonexistent") } throws: { "\($0)".contains("cannot be read") }
        #expect { try PostgresURL("postgres://reader@db.internal/research?user=x") } throws: { "\($0)".contains("'user'") }
    }
}
