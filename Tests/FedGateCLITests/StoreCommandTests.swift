import ArgumentParser
import Foundation
import Testing
@testable import FedGateCLI
import FedGateStore

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
        let records = try await ledger.backend.auditRecords()
        #expect(records.map(\.action) == ["ledger.budget", "consent.add"])
        try await AuditCommand.Verify.parse(store).execute()
        do {
            try await DBCommand.Migrate.parse(["--store", "mysql://x"]).execute()
            Issue.record("accepted an unknown store")
        } catch {
            #expect(FedGateCommand.message(for: error).contains("--store"))
        }
    }
}
