import FedGatePKI
import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateCLI
@testable import FedGateConsortiumTesting

/// `fedgate doctor` against a real broker over mutual TLS: a healthy gateway passes every check,
/// and each fault injected is named with what to do.
@Suite("fedgate doctor")
struct DoctorTests {
    /// A gateway folder: certificate, CA, policy, data and config; `edit` may change the config text.
    func gateway(_ consortium: Consortium, port: Int, certificate: (Consortium) throws -> Void = { _ = try $0.credentials("hospital-a", .silo) },
                 policy: String = Fixtures.policy(silo: "hospital-a"), edit: (String) -> String = { $0 }) throws -> String {
        try certificate(consortium)
        try consortium.ca.certificatePEM.write(to: consortium.file("ca.pem"), atomically: true, encoding: .utf8)
        try policy.write(to: consortium.file("policy.yaml"), atomically: true, encoding: .utf8)
        try Fixtures.data.csv.write(to: consortium.file("data.csv"), atomically: true, encoding: .utf8)
        let config = consortium.file("gateway.yaml")
        try edit("""
            silo: hospital-a
            broker: { host: 127.0.0.1, port: \(port), name: broker }
            tls: { certificate: hospital-a.pem, key: hospital-a.key, ca: ca.pem }
            store: sqlite:hospital-a.sqlite
            policy: policy.yaml
            dataset: { name: breast-cancer-2024, csv: data.csv, label: malignant }
            """).write(to: config, atomically: true, encoding: .utf8)
        return config.path
    }

    func findings(_ path: String, local: @escaping @Sendable () -> Date = { Date() }) async -> [String: Finding] {
        let all = await Doctor.gateway(config: path, timeout: .seconds(10), local: local)
        return Dictionary(all.map { ($0.check, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Runs `body` with a broker serving on loopback, its store enrolling hospital-a.
    func withBroker(_ consortium: Consortium, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        let store = try await consortium.store("broker")
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: store, logger: consortium.logger) { broker in
            _ = try await consortium.enrolledSilo("hospital-a", in: store)
            try await body(broker.port)
        }
    }

    @Test("a healthy gateway: every check passes, the broker names the silo, the clocks agree")
    func healthy() async throws {
        let consortium = try Consortium()
        try await withBroker(consortium) { port in
            // enrolledSilo wrote hospital-a's certificate and key; keep them. The silo's store exists.
            let path = try gateway(consortium, port: port, certificate: { _ in })
            _ = try await consortium.store("hospital-a")
            let found = await findings(path)
            #expect(found.values.allSatisfy { $0.status == .ok }, "\(found.values.map(\.line))")
            #expect(found["broker TLS"]?.detail.contains("knows this silo as hospital-a") == true)
            #expect(found["clock"]?.status == .ok && found["data"]?.detail.contains("rows") == true)
        }
    }

    @Test("a clock ten minutes off the broker's is named, with NTP as the fix")
    func clockOff() async throws {
        let consortium = try Consortium()
        try await withBroker(consortium) { port in
            let path = try gateway(consortium, port: port, certificate: { _ in })
            let clock = await findings(path, local: { Date().addingTimeInterval(600) })["clock"]
            // About +600 s, less half the call's round trip (seconds on a loaded machine).
            let offset = clock?.detail.split(separator: " ").first { $0.hasPrefix("+") }.flatMap { Double($0.dropFirst()) }
            #expect(clock?.status == .failure && clock?.remedy?.contains("NTP") == true, "\(clock?.line ?? "none")")
            #expect(offset.map { (590...601).contains($0) } == true, "\(clock?.line ?? "none")")
        }
    }

    @Test("an expired certificate, another consortium's CA, a policy typo and a broker that is down are each named with the fix")
    func faults() async throws {
        let consortium = try Consortium()
        let closed = try Processes.freePort()
        let expired = await findings(try gateway(consortium, port: closed, certificate: {
            _ = try $0.credentials("hospital-a", .silo, days: 1, now: Date().addingTimeInterval(-3 * 86_400))
        }))["certificate"]
        #expect(expired?.status == .failure && expired?.remedy?.contains("expired") == true, "\(expired?.line ?? "none")")

        let rogue = try ConsortiumCA.create(name: "rogue CA")
        let foreign = await findings(try gateway(consortium, port: closed, certificate: { _ = try $0.credentials("hospital-a", .silo, issuer: rogue) }))["certificate"]
        #expect(foreign?.status == .failure && foreign?.remedy?.contains("tls.ca must be the consortium's root") == true, "\(foreign?.line ?? "none")")

        let typo = await findings(try gateway(consortium, port: closed, policy: Fixtures.policy(silo: "hospital-a") + "\nmodles: [logistic]\n"))["policy"]
        #expect(typo?.status == .failure && typo?.detail.contains("modles") == true, "\(typo?.line ?? "none")")

        let down = await findings(try gateway(consortium, port: closed))
        #expect(down["broker TCP"]?.status == .failure && down["broker TCP"]?.detail.contains("refused") == true)
        #expect(down["broker TLS"] == nil, "no handshake is tried once TCP failed")
        #expect(down["certificate"]?.status == .ok)
        #expect(down["store"]?.status == .warning && down["store"]?.remedy?.contains("creates it") == true)
        #expect(!FileManager.default.fileExists(atPath: consortium.file("hospital-a.sqlite").path), "the doctor writes nothing")
    }

    @Test("a PostgreSQL store that cannot be reached, or refuses a plain connection, is named with the store: fields to check")
    func storeRefused() async throws {
        let consortium = try Consortium()
        let closed = try Processes.freePort()
        let path = try gateway(consortium, port: closed, edit: { $0.replacingOccurrences(of: "store: sqlite:hospital-a.sqlite", with: "store: postgres://fedgate@localhost:\(closed)/silo") })
        let store = await findings(path)["store"]
        #expect(store?.status == .failure && store?.detail.contains("refused the connection") == true && store?.remedy?.contains("sslmode") == true,
                "\(store?.line ?? "none")")
    }

    @Test("a broker: the root's key used for issuing is a warning, an intermediate passes, a port already held is named")
    func broker() async throws {
        let consortium = try Consortium()
        // 30 days: a broker's certificate within 7 days of its end is a warning (it is not renewed by itself).
        _ = try consortium.credentials("broker", .broker, days: 30)
        try consortium.ca.certificatePEM.write(to: consortium.file("ca.pem"), atomically: true, encoding: .utf8)
        for (folder, ca) in [("root", consortium.ca), ("issuing", try consortium.ca.intermediate(name: "broker issuing CA", days: 60))] {
            let dir = consortium.file(folder)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try ca.certificatePEM.write(to: dir.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
            try ca.keyPEM.write(to: dir.appendingPathComponent("ca-key.pem"), atomically: true, encoding: .utf8)
        }
        _ = try await consortium.store("broker")
        // A port this test holds: the broker could not listen there.
        let held = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(held) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(held, $0, length) == 0 && listen(held, 1) == 0 && getsockname(held, $0, &length) == 0 }
        }
        try #require(bound)
        let heldPort = Int(UInt16(bigEndian: address.sin_port))
        func config(issuing: String, port: Int) throws -> String {
            let path = consortium.file("broker-\(issuing)-\(port).yaml")
            try """
                id: broker
                listen: { host: 127.0.0.1, port: \(port) }
                tls: { certificate: broker.pem, key: broker.key, ca: ca.pem }
                store: sqlite:broker.sqlite
                issuing: { ca: \(issuing), days: 7 }
                """.write(to: path, atomically: true, encoding: .utf8)
            return path.path
        }
        func byCheck(_ findings: [Finding]) -> [String: Finding] { Dictionary(findings.map { ($0.check, $0) }, uniquingKeysWith: { a, _ in a }) }

        let root = byCheck(await Doctor.broker(config: try config(issuing: "root", port: 0)))
        #expect(root["issuing"]?.status == .warning && root["issuing"]?.remedy?.contains("fedgate ca intermediate") == true, "\(root["issuing"]?.line ?? "none")")
        let good = byCheck(await Doctor.broker(config: try config(issuing: "issuing", port: 0)))
        #expect(good.values.allSatisfy { $0.status == .ok }, "\(good.values.map(\.line))")
        let busy = byCheck(await Doctor.broker(config: try config(issuing: "issuing", port: heldPort)))
        #expect(busy["listen"]?.status == .failure && busy["listen"]?.detail.contains("already listens") == true, "\(busy["listen"]?.line ?? "none")")
    }
}
