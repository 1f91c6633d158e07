import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// A compliance officer with a certificate and no database access: the broker's trail over mutual
/// TLS, a silo's trail from the file the silo exported, one report, every chain verified.
@Suite("A compliance officer's report without database access")
struct ComplianceOfficerTests {
    let processes = Processes()

    @Test("the broker's trail read over mTLS with the officer's certificate and a silo's exported file make one report, each chain verified; an edited file is named; a data scientist may not read the trail")
    func reportOverTLS() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let gateways = try await processes.startGateways(consortium, seed: 33, port: port)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 1, deadline: 60)
        defer { submit.signal(SIGKILL) }
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        try #require(await eventually(seconds: 120) { (try? await store.planRuns().first { $0.planHash == hash }?.state) == .finished })

        // The silo exports its own trail; the officer gets the file, not the database.
        let exported = try await processes.fedgate(["audit", "export", "--store", "sqlite:\(consortium.file("hospital-0.sqlite").path)",
                                                    "--format", "jsonl", "--out", consortium.file("hospital-0.jsonl").path], consortium, log: "silo-export.log")
        #expect(exported.status == 0, "\(exported.output)")
        _ = try consortium.credentials("olga", .complianceOfficer)
        func officer(_ who: String, trail: String) async throws -> (status: Int32?, output: String) {
            try await processes.fedgate(["audit", "export", "--broker", "127.0.0.1:\(port)", "--cert", consortium.file("\(who).pem").path,
                                         "--key", consortium.file("\(who).key").path, "--ca", consortium.file("ca.pem").path,
                                         "--also-trail", trail, "--format", "html", "--out", consortium.file("report-\(who).html").path],
                                        consortium, log: "officer-\(UUID().uuidString.prefix(6)).log")
        }
        let report = try await officer("olga", trail: consortium.file("hospital-0.jsonl").path)
        let brokerRecords = try await store.auditRecords().count
        #expect(report.status == 0, "\(report.output)")
        #expect(report.output.contains("broker 127.0.0.1:\(port): audit chain intact: "), "\(report.output)")
        #expect(report.output.contains("(from hospital-0.jsonl): audit chain intact"), "\(report.output)")
        let records = try #require(report.output.split(separator: "\n").first { $0.hasPrefix("broker ") }?.split(separator: " ").dropLast().last)
        #expect(Int(records) ?? 0 >= brokerRecords - 2, "the broker's whole trail came over TLS: \(report.output)")
        let html = try String(contentsOf: consortium.file("report-olga.html"), encoding: .utf8)
        #expect(html.contains(String(hash.prefix(12))) && html.contains("hospital-0"))
        // What the plan asked (DP settings, columns), how it ended, the silo's caps and the enrolments.
        #expect(html.contains("noise multiplier 2.34") && html.contains("mean_radius") && html.contains("<span class=ok>finished</span>"), "\(html)")
        #expect(html.contains("<h2>Privacy budgets</h2>") && html.contains("party.enroll") && html.contains("self-declared"))

        // A payload edited in the file breaks its chain there, and the export says so (exit 2).
        let text = try String(contentsOf: consortium.file("hospital-0.jsonl"), encoding: .utf8)
        let edited = text.replacingOccurrences(of: #""payload_text":"{\"dataset\":\"breast-cancer-2024\""#,
                                                with: #""payload_text":"{\"dataset\":\"breast-cancer-2025\""#)
        try #require(edited != text, "the file holds a dataset payload to edit")
        try edited.write(to: consortium.file("edited.jsonl"), atomically: true, encoding: .utf8)
        let tampered = try await officer("olga", trail: consortium.file("edited.jsonl").path)
        #expect(tampered.status == 2 && tampered.output.contains("(from edited.jsonl): audit chain broken at record"), "\(tampered.output)")

        // The trail is the broker's to refuse: a data scientist's certificate reads nothing.
        _ = try processes.scientist(consortium, port: port)
        let refused = try await officer("dana", trail: consortium.file("hospital-0.jsonl").path)
        #expect(refused.status != 0 && refused.output.contains("permissionDenied"), "\(refused.output)")
    }
}
