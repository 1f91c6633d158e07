import FedGatePKI
import Foundation
import Testing
import X509
@testable import FedGateConsortiumTesting

/// The operator's whole path as docs/deployment.md tells it ("The whole path, on one machine"):
/// the block is read from the document and run as written by bash, with the real `fedgate`
/// processes, real mutual TLS and the broker on PostgreSQL. The document cannot drift from what works.
@Suite("The deployment walkthrough, run as the document writes it", .serialized)
struct DeploymentWalkthroughTests {
    static let heading = "## The whole path, on one machine"

    /// The walkthrough's shell block, as the document holds it.
    static func script() throws -> String {
        let document = try String(contentsOf: Consortium.root.appendingPathComponent("docs/deployment.md"), encoding: .utf8)
        let section = try #require(document.range(of: heading), "docs/deployment.md has no '\(heading)' section")
        let open = try #require(document.range(of: "```sh\n", range: section.upperBound..<document.endIndex))
        let close = try #require(document.range(of: "\n```\n", range: open.upperBound..<document.endIndex))
        return String(document[open.upperBound..<close.lowerBound]) + "\n"
    }

    @Test("ca init to a compliance officer's report: an approved plan on PostgreSQL, its model scored in NumPy, the trail fetched over mTLS")
    func walkthrough() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        guard let database = try await consortium.postgresURL() else { return }
        let work = consortium.file("walkthrough")
        let script = consortium.file("walkthrough.sh")
        try Self.script().write(to: script, atomically: true, encoding: .utf8)
        let path = Processes.fedgate.deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        // The harness starts the child as the leader of its own process group (pgid = pid), and a script's
        // background jobs stay in it, so the script, its broker and its gateways end together if it hangs.
        // (Not through setsid: a group leader makes setsid fork, and the status seen would be the fork's 0.)
        let run = try Processes.Running([script.path], log: consortium.file("walkthrough.log"),
                                        environment: ["PATH": path, "WORK": work.path, "BROKER_DB": database,
                                                      "BROKER_PORT": "\(try Processes.freePort())", "ENROL_PORT": "\(try Processes.freePort())"],
                                        executable: "/bin/bash")
        let status = await run.exit(within: 600)
        if status == nil { kill(-run.process.processIdentifier, SIGKILL) }
        let output = run.output
        try #require(status == 0, "the walkthrough stopped (status \(status.map(String.init) ?? "none: killed after 600 s")):\n\(output.suffix(4000))")

        // The plan waited for hospital-a's person, then ran and passed its gate.
        #expect(output.contains("hospital-a: approval: the plan waits for a person's approval"))
        #expect(output.contains("approved at silo 'hospital-a' by admin:alice"))
        #expect(output.contains(": finished") && output.contains("gate passed: model version 1"), "\(output.suffix(3000))")
        // Enrolled by the intermediate: the certificate file carries the chain.
        let chain = try Certificate.chain(pemEncoded: try String(contentsOf: work.appendingPathComponent("hospital-a/cert.pem"), encoding: .utf8))
        #expect(chain.count == 2 && !chain[1].subject.description.isEmpty)
        // NumPy scored the pulled model from its metadata alone, on rows it never saw labelled by FedGate.
        let scores = try String(contentsOf: work.appendingPathComponent("dana/scores.jsonl"), encoding: .utf8)
        let summary = try #require(scores.split(separator: "\n").last.map(String.init))
        let accuracy = try #require((try JSONSerialization.jsonObject(with: Data(summary.utf8)) as? [String: Any])?["accuracy"] as? Double)
        #expect(accuracy >= 0.75, "\(summary)")
        // Version 1 went to hospital-b as a canary, passed its check there, then to every silo; hospital-b scored rows with it.
        #expect(output.contains("running: hospital-a v1, hospital-b v1, hospital-c v1"), "\(output.suffix(3000))")
        #expect(output.contains("model: version 1 deployed to hospital-b") && output.contains("accuracy "), "\(output.suffix(2000))")
        // The officer's report, fetched over mTLS, holds the broker's trail and hospital-a's, both intact.
        #expect(output.contains("broker 127.0.0.1:") && output.contains("audit chain intact"))
        let report = try String(contentsOf: work.appendingPathComponent("olga/report.html"), encoding: .utf8)
        #expect(report.contains("admin:alice") && report.contains("hospital-a"), "the report names who approved the plan at hospital-a")
        #expect(report.contains("<td>1</td><td>v1</td><td>canary</td><td>hospital-b</td>") && report.contains("<span class=ok>passed</span>"),
                "the report shows the canary and its passed check")
    }
}
