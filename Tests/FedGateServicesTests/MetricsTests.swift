import FedGatePKI
import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// `/metrics` of a broker and its gateways as real processes, scraped over HTTPS with a monitor's
/// client certificate (as Prometheus would) and parsed.
@Suite("Prometheus metrics on broker and gateway")
struct MetricsTests {
    let processes = Processes()

    /// One sample of the exposition text: name, labels, value.
    struct Sample: Equatable {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    /// Parses Prometheus text format 0.0.4 (what we emit: no escapes in label values, no timestamps);
    /// a line that is neither a comment nor `name{labels} value` fails the test.
    static func parse(_ text: String) throws -> [Sample] {
        var out: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            let cut = try #require(line.lastIndex(of: " "), "not a sample: \(line)")
            let value = try #require(Double(line[line.index(after: cut)...].replacingOccurrences(of: "+Inf", with: "inf")), "no value: \(line)")
            let series = line[..<cut]
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{") {
                name = String(series[..<open])
                #expect(series.hasSuffix("}"), "\(line)")
                for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    try #require(kv.count == 2 && kv[1].hasPrefix("\"") && kv[1].hasSuffix("\""), "bad label: \(line)")
                    labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
                }
            }
            #expect(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }, "bad metric name: \(line)")
            out.append(Sample(name: name, labels: labels, value: value))
        }
        return out
    }

    /// GET with curl as `who` (a certificate in the consortium folder, or none): HTTP status and body.
    /// The server's certificate is checked against the CA and its name (`server`, resolved to loopback).
    func scrape(_ port: Int, server: String = "broker", as who: String?, _ consortium: Consortium) async throws -> (status: Int, body: String) {
        var arguments = ["-s", "--tlsv1.3", "--cacert", consortium.file("ca.pem").path, "-o", "-", "-w", "\n%{http_code}",
                         "--resolve", "\(server):\(port):127.0.0.1"]
        if let who { arguments += ["--cert", consortium.file("\(who).pem").path, "--key", consortium.file("\(who).key").path] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = arguments + ["https://\(server):\(port)/metrics"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = Pipe()
        try process.run()
        // Everything curl says has arrived at end of file; not waiting for its exit on the test's
        // thread (Foundation was seen to notice exits late under load, blocking the task pool).
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        let text = String(decoding: data, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    func metricsPort(_ run: Processes.Running) async -> Int {
        var port = 0
        _ = await eventually(seconds: 120) {
            if let line = run.output.split(separator: "\n").first(where: { $0.hasPrefix("metrics on https://") }),
               let p = Int(line.split(separator: ":").last?.split(separator: "/").first ?? "") { port = p }
            return port > 0
        }
        return port
    }

    func value(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    @Test("a refused plan and a two-round plan: the broker counts rounds by outcome, refusals by rule, bytes, durations and participants; each gateway its ε spent and remaining (equal to its ledger); only monitor and admin certificates may read; no log holds a key")
    func scrapeBrokerAndGateways() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        // The broker with a metrics listener, both on ports the system picks (a port probed first
        // and bound again could be taken in between by another test's listener).
        let (broker, port) = try await processes.startBroker(consortium, log: "broker-m.log", extra: "metrics: { host: 127.0.0.1, port: 0 }")
        defer { broker.signal(SIGKILL) }
        #expect(port > 0, "\(broker.output)")
        let brokerMetrics = await metricsPort(broker)
        try #require(brokerMetrics > 0, "\(broker.output)")

        let gateways = try await processes.startGateways(consortium, seed: 5, port: port) { $0 + "\nmetrics: { port: 0 }\n" }
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        _ = try consortium.credentials("prometheus", .monitor)
        let client = try processes.scientist(consortium, port: port)
        try Fixtures.plan(rounds: 1, quorum: 3, deadline: 20, purpose: "marketing")
            .write(to: consortium.file("refused.yaml"), atomically: true, encoding: .utf8)
        _ = try await processes.fedgate(["plan", "submit", consortium.file("refused.yaml").path] + client, consortium, log: "submit-1.log")
        try Fixtures.plan(rounds: 2, quorum: 3, deadline: 30).write(to: consortium.file("plan.yaml"), atomically: true, encoding: .utf8)
        let submitted = try await processes.fedgate(["plan", "submit", consortium.file("plan.yaml").path] + client, consortium, log: "submit-2.log")
        let hash = try #require(submitted.output.split(separator: "\n").first { $0.hasPrefix("plan ") }?.split(separator: " ")[1]).description
        let watched = try await processes.fedgate(["plan", "watch", hash] + client, consortium, log: "watch.log")
        #expect(watched.output.contains("round   2 committed"), "\(watched.output)")

        let scraped = try await scrape(brokerMetrics, as: "prometheus", consortium)
        #expect(scraped.status == 200, "\(scraped)")
        let b = try Self.parse(scraped.body)
        #expect(value(b, "fedgate_rounds_total", ["outcome": "committed"]) == 2, "\(scraped.body)")
        #expect(value(b, "fedgate_rounds_total", ["outcome": "aborted"]) ?? 0 >= 1)
        #expect(value(b, "fedgate_offer_refusals_total", ["rule": "purpose"]) ?? 0 >= 3, "\(scraped.body)")
        #expect(value(b, "fedgate_round_participants") == 3)
        #expect(value(b, "fedgate_round_duration_seconds_count", ["outcome": "committed"]) == 2)
        #expect(value(b, "fedgate_bytes_total", ["direction": "in"]) ?? 0 > 0 && value(b, "fedgate_bytes_total", ["direction": "out"]) ?? 0 > 0)
        #expect(value(b, "fedgate_connected_gateways") == 3)
        #expect(value(b, "fedgate_epsilon_mirror", ["silo": "hospital-0"]) ?? 0 > 0)
        // Series nothing has counted yet are there at zero; the build and the certificate's expiry; HELP lines.
        #expect(value(b, "fedgate_updates_rejected_total", ["reason": "norm"]) == 0 && value(b, "fedgate_store_retries_total") == 0, "\(scraped.body)")
        #expect(value(b, "fedgate_build_info", ["version": FedGateVersion.current]) == 1)
        #expect(value(b, "fedgate_certificate_expiry_timestamp_seconds") ?? 0 > Date().timeIntervalSince1970)
        #expect(scraped.body.contains("# HELP fedgate_rounds_total Rounds ended, by outcome.\n# TYPE fedgate_rounds_total counter"), "\(scraped.body)")

        for (i, g) in gateways.enumerated() {
            let port = await metricsPort(g)
            let text = try await scrape(port, server: "hospital-\(i)", as: "admin-ops", consortium.issuing("admin-ops", .admin))
            #expect(text.status == 200)
            let samples = try Self.parse(text.body)
            let ledger = try SQLiteLedger(path: consortium.file("hospital-\(i).sqlite").path)
            let spent = try await PrivacyLedger(backend: ledger).spent(dataset: "breast-cancer-2024", delta: 1e-5).committed
            let reported = try #require(value(samples, "fedgate_epsilon_spent", ["dataset": "breast-cancer-2024"]), "\(text.body)")
            #expect(spent > 0 && abs(reported - spent) < 1e-9, "\(reported) vs the ledger's \(spent)")
            #expect(abs((value(samples, "fedgate_epsilon_remaining", ["dataset": "breast-cancer-2024", "cap": "lifetime"]) ?? -1) - (20 - spent)) < 1e-9,
                    "the lifetime cap's rest, named: \(text.body)")
            #expect(value(samples, "fedgate_certificate_expiry_timestamp_seconds") ?? 0 > Date().timeIntervalSince1970)
            #expect(value(samples, "fedgate_policy_refusals_total", ["rule": "purpose"]) ?? 0 >= 1, "\(text.body)")
            #expect(value(samples, "fedgate_rounds_total", ["outcome": "committed"]) == 2)
            #expect(value(samples, "fedgate_offers_total", ["decision": "accepted"]) == 2)
        }

        // Deny by default: a data scientist's certificate is refused; without one, TLS itself refuses.
        #expect(try await scrape(brokerMetrics, as: "dana", consortium).status == 403)
        #expect(try await scrape(brokerMetrics, as: nil, consortium).status == 0)

        // No log line carries key material.
        for run in [broker] + gateways {
            #expect(!run.output.contains("PRIVATE KEY"))
            for who in ["broker", "hospital-0", "prometheus"] {
                let key = try String(contentsOf: consortium.file("\(who).key"), encoding: .utf8)
                for line in key.split(separator: "\n") where !line.hasPrefix("-----") && line.count >= 16 {
                    #expect(!run.output.contains(line), "a line of \(who)'s key is in a log")
                }
            }
        }
    }
}

extension Consortium {
    /// Issues `who`'s certificate and returns the consortium (for inline use).
    func issuing(_ who: String, _ role: Identity.Role) throws -> Consortium {
        _ = try credentials(who, role)
        return self
    }
}
