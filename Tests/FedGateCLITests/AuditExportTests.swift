import ArgumentParser
import FedGatePrivacy
@testable import FedGateStore
import Foundation
import Testing
@testable import FedGateCLI
#if canImport(FoundationXML)
import FoundationXML
#endif

@Suite("fedgate audit export: JSON lines, CSV, XML and the HTML compliance report")
struct AuditExportTests {
    /// A silo's store with a budget, consent, a policy decision and three committed rounds of DP-SGD
    /// (and one released), so every section of a report has something in it.
    static func siloStore() async throws -> (store: String, path: String, epsilon: Double) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).sqlite").path
        let store = ["--store", "sqlite:\(path)"]
        try await DBCommand.Migrate.parse(store).execute()
        try await LedgerCommand.Register.parse(store + ["--policy", "policies/hospital-a.yaml"]).execute()
        try await ConsentCommand.Add.parse(store + ["--dataset", "breast-cancer-2024", "--purpose", "research", "--legal-basis", "consent, art. 9(2)(a)",
                                                     "--scope", "2024 \"cohort\""]).execute()
        await #expect(throws: ExitCode(3), "the plan needs approval") {
            try await PlanCommand.Decide.parse(store + ["--policy", "policies/hospital-a.yaml", "examples/plans/breast-cancer-research.yaml",
                                                        "--actor", "hospital-a"]).execute()
        }
        let ledger = PrivacyLedger(backend: try SQLiteLedger(path: path))
        let event = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2.34, steps: 10)
        for round in 1...4 {
            let id = try await ledger.reserve(event, dataset: "breast-cancer-2024", plan: "plan-x", round: round, actor: "hospital-a")
            if round == 4 { try await ledger.release(id, actor: "hospital-a") } else { try await ledger.commit(id, actor: "hospital-a") }
        }
        let delta = try #require(try await ledger.backend.budget("breast-cancer-2024")).delta
        return ("sqlite:\(path)", path, try epsilon(of: .composed([event, event, event]), delta: delta))
    }

    static func export(_ store: String, _ format: String, _ extra: [String] = []) async throws -> String {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).\(format)").path
        try await AuditCommand.Export.parse(["--store", store, "--format", format, "--out", out] + extra).execute()
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    @Test("every format carries every record with its hash and says the chain held; filters keep only what they name")
    func formats() async throws {
        let (store, path, _) = try await Self.siloStore()
        let records = try await SQLiteLedger(path: path).auditRecords()
        #expect(records.count == 11)  // budget, consent, decision, 4 reservations, 3 commits, 1 release

        let jsonl = try await Self.export(store, "jsonl").split(separator: "\n")
        let objects = try jsonl.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(objects.first?["type"] as? String == "chain" && objects.first?["intact"] as? Bool == true)
        #expect(objects.dropFirst().map { $0["hash"] as? String } == records.map(\.hash))

        let csv = try await Self.export(store, "csv")
        #expect(csv.hasPrefix("source,chain,seq,at,actor,action,subject,payload,previous_hash,hash\r\n"))
        #expect(csv.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count == records.count + 1)
        #expect(csv.contains("\"\"legal_basis\"\":\"\"consent, art. 9(2)(a)\"\""), "payloads are quoted, quotes doubled")

        let xml = try XMLDocument(xmlString: try await Self.export(store, "xml"))
        let chain = try #require(try xml.nodes(forXPath: "/audit/chain").first as? XMLElement)
        #expect(chain.attribute(forName: "intact")?.stringValue == "true")
        #expect(try xml.nodes(forXPath: "/audit/chain/record").count == records.count)
        #expect(try xml.nodes(forXPath: "/audit/chain/record[@action='consent.add']/payload").first?.stringValue?.contains("2024 \\\"cohort\\\"") == true)

        // Filters: a plan, a silo, a window.
        let planOnly = try await Self.export(store, "jsonl", ["--plan", "plan-x"]).split(separator: "\n").count - 1
        #expect(planOnly == 4, "the four reservations name plan-x")
        let none = try await Self.export(store, "jsonl", ["--silo", "bank-b"]).split(separator: "\n").count - 1
        #expect(none == 0)
        let future = try await Self.export(store, "jsonl", ["--from", "2999-01-01"]).split(separator: "\n").count - 1
        #expect(future == 0)
        await #expect(throws: ValidationError.self) { _ = try await Self.export(store, "csv", ["--from", "yesterday"]) }
    }

    @Test("the HTML report shows the chain, consent basis, decisions, and ε over time ending at the accountant's ε for the commits")
    func html() async throws {
        let (store, _, expected) = try await Self.siloStore()
        let html = try await Self.export(store, "html")
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.hasSuffix("</html>\n"))
        #expect(html.contains("<span class=ok>audit chain intact: 11 records</span>"))
        #expect(html.contains("consent, art. 9(2)(a)") && html.contains("2024 &quot;cohort&quot;"), "text is escaped")
        #expect(html.contains("<td>hospital-a</td>") && html.contains("needs_approval"))
        #expect(html.contains("<svg") && html.contains(String(format: "ε committed: %.4f after 3 commits", expected)), "\(expected)")
        #expect(!html.contains("<script"), "no scripts in the report")
    }

    @Test("the HTML report shows a plan's poisoning flags round by round and the alert a silo flagged round after round raised")
    func attackFlags() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).sqlite").path
        try await DBCommand.Migrate.parse(["--store", "sqlite:\(path)"]).execute()
        let broker = try SQLiteLedger(path: path)
        let plan = String(repeating: "ab", count: 32)
        for round in 1...3 {
            try await broker.audit(.attackFlagged(.init(plan: plan, round: round, kind: "excluded", reason: "left out by multi-krum:1")),
                                   actor: "broker", subject: "clinic-0", at: Date())
        }
        try await broker.audit(.attackFlagged(.init(plan: plan, round: 2, kind: "refused", reason: "norm check: 3.1e+04 > 10000")),
                               actor: "broker", subject: "clinic-4", at: Date())
        try await broker.audit(.attackAlert(.init(plan: plan, rounds: [1, 2, 3], alertAfter: 3)), actor: "broker", subject: "clinic-0", at: Date())
        let html = try await Self.export("sqlite:\(path)", "html")
        #expect(html.contains("<h2>Attack flags</h2>"))
        #expect(html.contains("<span class=bad>alert</span> clinic-0 flagged in rounds 1, 2, 3"), "\(html)")
        #expect(html.contains("<td>clinic-4</td><td><span class=bad>refused</span></td><td>norm check: 3.1e+04 &gt; 10000</td>"), "\(html)")
        #expect(html.components(separatedBy: "left out by multi-krum:1").count - 1 == 3)
        let quiet = try await Self.export(try await Self.siloStore().store, "html")
        #expect(quiet.contains("No update was flagged."))
    }

    @Test("the HTML report shows a committed round's update bytes against float32's, and how many times fewer a codec made them")
    func roundTraffic() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).sqlite").path
        try await DBCommand.Migrate.parse(["--store", "sqlite:\(path)"]).execute()
        let broker = try SQLiteLedger(path: path)
        let plan = String(repeating: "cd", count: 32)
        try await broker.audit(.roundAdvanced(.committed, .init(round: 1, survivors: ["lab-0", "lab-1"], checkpointSHA256: "aa")), actor: "broker", subject: plan, at: Date())
        try await broker.audit(.roundTraffic(.init(round: 1, bytesIn: 3290, rawBytes: 13000, codec: "q8")), actor: "broker", subject: plan, at: Date())
        let html = try await Self.export("sqlite:\(path)", "html")
        #expect(html.contains("<th>Update bytes</th>") && html.contains("<td>lab-0, lab-1</td><td>3290 (float32 13000, 3.95× fewer)</td>"), "\(html)")
    }

    @Test("the HTML report shows each deployment with its gate, every monitoring check, the alert and where the silos went back to, and the rollback's time")
    func deployments() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).sqlite").path
        try await DBCommand.Migrate.parse(["--store", "sqlite:\(path)"]).execute()
        let broker = try SQLiteLedger(path: path)
        try await broker.audit(.deploymentStarted(.init(deployment: 1, version: 2, stage: "canary", silos: ["clinic-0", "clinic-1"], maxPSI: 0.25,
                                                        significance: 0.001, minAccuracy: 0.9, watch: ["age", "bmi"], positions: [0, 1])),
                               actor: "ada", subject: "deployment 1", at: Date())
        for silo in ["clinic-0", "clinic-1"] {
            try await broker.audit(.deploymentAnswered(.init(deployment: 1, version: 2, rollback: false, problem: nil, reference: [[1, 2, 3, 4], [4, 3, 2, 1]], sigma: 6)),
                                   actor: silo, subject: silo, at: Date())
        }
        try await broker.audit(.monitorChecked(.init(deployment: 1, version: 2, counts: [], sigma: 6, accuracy: 0.95, psi: ["age": 0.02, "bmi": 0.04], reasons: [],
                                                     pValues: ["age": 0.9, "bmi": 0.31])),
                               actor: "clinic-0", subject: "clinic-0", at: Date())
        try await broker.audit(.monitorChecked(.init(deployment: 1, version: 2, counts: [], sigma: 6, accuracy: 0.93, psi: ["age": 1.8, "bmi": 0.05],
                                                     reasons: ["drift: age has PSI 1.800 > 0.250 (p 1.0e-09)"])), actor: "clinic-1", subject: "clinic-1", at: Date())
        try await broker.audit(.deploymentAlert(.init(deployment: 1, version: 2, reasons: ["drift: age has PSI 1.800 > 0.250 (p 1.0e-09)"], back: ["clinic-0": 1, "clinic-1": 1])),
                               actor: "broker", subject: "clinic-1", at: Date())
        try await broker.audit(.deploymentRolledBack(.init(deployment: 1, version: 2, seconds: 0.031)), actor: "broker", subject: "deployment 1", at: Date())
        let html = try await Self.export("sqlite:\(path)", "html")
        #expect(html.contains("<h2>Deployments</h2>"))
        #expect(html.contains("<td>1</td><td>v2</td><td>canary</td><td>clinic-0, clinic-1</td><td>PSI ≤ 0.2500, accuracy ≥ 0.9000 on age, bmi</td><td>ada</td>"), "\(html)")
        #expect(html.contains("<span class=bad>rolled back</span> in 0.031 s"))
        #expect(html.contains("<span class=bad>alert</span> deployment 1 (v2) at clinic-1: drift: age has PSI 1.800 &gt; 0.250 (p 1.0e-09); back to clinic-0 v1, clinic-1 v1"), "\(html)")
        #expect(html.contains("<td>clinic-0</td><td>v2</td><td>0.9500</td><td>bmi 0.0400 (p 0.31)</td><td><span class=ok>passed</span></td>"), "\(html)")
        let quiet = try await Self.export(try await Self.siloStore().store, "html")
        #expect(quiet.contains("No version was deployed in this trail."))
    }

    @Test("a tampered chain is exported all the same, and the export says where it broke and exits 2")
    func tampered() async throws {
        let (store, path, _) = try await Self.siloStore()
        let ledger = try SQLiteLedger(path: path)
        try await ledger.executeForTesting("UPDATE audit_records SET actor = 'mallory' WHERE seq = 3")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-export-\(UUID().uuidString).html").path
        await #expect(throws: ExitCode.self) {
            try await AuditCommand.Export.parse(["--store", store, "--format", "html", "--out", out]).execute()
        }
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(html.contains("<span class=bad>audit chain broken at record 3"))
    }

    @Test("the HTML report opens in headless Chromium: the DOM is rendered and a screenshot is taken")
    func chromium() async throws {
        let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        guard let browser = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("CI must have chromium (apt-get install chromium)") }
            return
        }
        let (store, _, _) = try await Self.siloStore()
        let html = try await Self.export(store, "html")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-chromium-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let page = folder.appendingPathComponent("report.html")
        try html.write(to: page, atomically: true, encoding: .utf8)
        func run(_ args: [String]) throws -> (status: Int32, output: String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: browser)
            p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(folder.appendingPathComponent("profile").path)",
                           "--enable-logging=stderr", "--v=0"] + args + [page.absoluteString]
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let dom = try run(["--dump-dom"])
        #expect(dom.status == 0 && dom.output.contains("Audit chain verification") && dom.output.contains("<svg"), "\(dom.output.suffix(2000))")
        #expect(!dom.output.contains("CONSOLE") && !dom.output.contains("Uncaught"), "no console errors: \(dom.output.suffix(2000))")
        let shot = folder.appendingPathComponent("report.png")
        let screenshot = try run(["--screenshot=\(shot.path)", "--window-size=1280,2400"])
        #expect(screenshot.status == 0 && FileManager.default.fileExists(atPath: shot.path), "\(screenshot.output.suffix(2000))")
        let size = (try? FileManager.default.attributesOfItem(atPath: shot.path)[.size] as? Int) ?? 0
        #expect(size > 10_000, "a screenshot with something on it: \(size) bytes")
    }
}
