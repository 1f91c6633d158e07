import ArgumentParser
import Foundation
import Testing
@testable import FedGateCLI
import FedGateStore
import FedGatePolicy

@Suite("fedgate db, ledger, consent and audit commands on an embedded store")
struct StoreCommandTests {
    @Test("migrate, register caps from a policy, record consent, and verify the audit chain")
    func workflow() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-cli-\(UUID().uuidString).sqlite").path
        let store = ["--store", "sqlite:\(path)"]
        try await DBCommand.Migrate.parse(store).execute()
        try await LedgerCommand.Register.parse(store + ["--policy", "policies/hospital-a.yaml"]).execute()
        try await ConsentCommand.Add.parse(store + ["--dataset", "breast-cancer-2024", "--purpose", "research", "--legal-basis", "consent", "--scope", "2024"]).execute()
        let ledger = PrivacyLedger(backend: try SQLiteLedger(path: path))
        let budget = try #require(try await ledger.backend.budget("breast-cancer-2024"))
        #expect(budget.perPlanCap == 3 && budget.windowDays == 30 && budget.lifetimeCap == 10)
        #expect(try await ledger.backend.consents(dataset: "breast-cancer-2024").map(\.purpose) == ["research"])
        #expect(try await ledger.backend.auditRecords().map(\.action) == ["ledger.budget", "consent.add"])
        // With consent only for research, the research plan is decided (and needs approval); a plan for
        // another purpose would be refused by the consent rule (tested in the policy tests).
        // A plan that needs approval waits in the queue until an admin approves it, once.
        // Exit status 3: the plan needs approval (0 would be accepted, 1 refused).
        await #expect(throws: ExitCode(3)) {
            try await PlanCommand.Decide.parse(store + ["--policy", "policies/hospital-a.yaml", "examples/plans/breast-cancer-research.yaml"]).execute()
        }
        let hash = try FedGatePolicy.TrainingPlan.load(URL(fileURLWithPath: "examples/plans/breast-cancer-research.yaml")).contentHash
        let governance = try #require(ledger.backend as? any GovernanceBackend)
        #expect(try await governance.approval(planHash: hash, silo: "hospital-a")?.state == .pending)
        try await PlanCommand.Approve.parse(store + [hash, "--silo", "hospital-a", "--actor", "admin:alice"]).execute()
        #expect(try await governance.approval(planHash: hash, silo: "hospital-a")?.allows(at: Date()) == true)
        await #expect(throws: ValidationError.self) { try await PlanCommand.Reject.parse(store + [hash, "--silo", "hospital-a"]).execute() }
        #expect(try await ledger.backend.auditRecords().map(\.action) == ["ledger.budget", "consent.add", "policy.decision", "plan.approve"])
        try await AuditCommand.Verify.parse(store).execute()
        do {
            try await DBCommand.Migrate.parse(["--store", "mysql://x"]).execute()
            Issue.record("accepted an unknown store")
        } catch {
            #expect(FedGateCommand.message(for: error).contains("--store"))
        }
    }
}
