import FedGateLearning
import FedGatePolicy
import FedGateProto
import FedGateRounds
@testable import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// The gateway's offer judge and budget reservations on their own: a policy, a real SQLite ledger,
/// no broker and no network.
@Suite("A gateway's offer judge and budget reservations")
struct GatewayPartsTests {
    typealias Round = Fixtures

    /// A silo's governor on a new SQLite ledger with the data set's caps and a research consent.
    func governor(purposes: [String] = ["research"], approvalHours: Int? = nil) async throws -> SiloGovernor {
        let store = try SQLiteLedger(path: FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-parts-\(UUID().uuidString).sqlite").path)
        _ = try await store.applyMigrations(try Migration.load(from: Consortium.migrations))
        try await store.save(DatasetBudget(name: "breast-cancer-2024", delta: 1e-5, perPlanCap: 5, lifetimeCap: 20), actor: "admin")
        try await store.addConsent(ConsentRecord(dataset: "breast-cancer-2024", purpose: "research", legalBasis: "consent",
                                                 scope: "all patients", validFrom: Date().addingTimeInterval(-86_400)), actor: "admin")
        var text = Round.policy(silo: "hospital-0", purposes: purposes)
        if let approvalHours { text += "\napproval: { required: true, expires_after_hours: \(approvalHours) }\n" }
        return SiloGovernor(policy: try SiloPolicy.parse(text, file: "hospital-0.yaml"), policyText: text, ledger: PrivacyLedger(backend: store))
    }

    func judge(_ governor: SiloGovernor) -> OfferJudge {
        OfferJudge(governor: governor, dataset: "breast-cancer-2024", train: Round.data, test: Round.data, silo: "hospital-0")
    }

    func offer(_ yaml: String, hash: String? = nil, round: UInt32 = 1) throws -> Fedgate_V1_RoundOffer {
        var offer = Fedgate_V1_RoundOffer()
        offer.planYaml = yaml
        offer.planHash = try hash ?? TrainingPlan.parse(yaml, file: "plan").contentHash
        offer.round = round
        return offer
    }

    func refusal(_ judge: OfferJudge, _ offer: Fedgate_V1_RoundOffer) async -> OfferRefusal? {
        do { _ = try await judge.accept(offer); return nil } catch { return error as? OfferRefusal }
    }

    @Test("an accepted plan is judged once: every later round gets the same rows, restricted to the plan's columns, and one audited decision")
    func acceptedOnce() async throws {
        let g = try await governor(), j = judge(g)
        let o = try offer(Round.plan(rounds: 3, quorum: 2))
        let first = try await j.accept(o)
        var again = o
        again.round = 2
        let second = try await j.accept(again)
        #expect(first.train.featureCount == Round.data.featureCount && second.statistics == first.statistics)
        #expect(j.accepted(o.planHash)?.plan.contentHash == o.planHash)
        let decisions = try await g.ledger.backend.auditRecords().filter { $0.action == "policy.decision" }
        #expect(decisions.count == 1, "\(decisions.map(\.action))")
    }

    @Test("each refusal names its rule: a plan that is not the one offered, another data set, a column the silo lacks, a purpose the policy does not allow, an approval not given")
    func refusalsByRule() async throws {
        let j = judge(try await governor())
        let plan = Round.plan(rounds: 3, quorum: 2)
        #expect(await refusal(j, try offer("rounds: [", hash: "abc"))?.refusals.map(\.rule) == ["plan"])
        #expect(await refusal(j, try offer(plan, hash: String(repeating: "0", count: 64)))?.refusals.map(\.rule) == ["plan"])
        let elsewhere = plan.replacingOccurrences(of: "datasets: [breast-cancer-2024]", with: "datasets: [cardiology-2024]")
        #expect(await refusal(j, try offer(elsewhere))?.refusals.map(\.rule) == ["datasets"])
        let column = plan.replacingOccurrences(of: "columns: [", with: "columns: [blood_type, ")
        #expect(await refusal(j, try offer(column))?.refusals.map(\.rule) == ["columns"])
        let marketing = try offer(Round.plan(rounds: 3, quorum: 2, purpose: "marketing"))
        let refused = try #require(await refusal(j, marketing))
        #expect(refused.refusals.map(\.rule).contains("purpose") && refused.reasons.allSatisfy { $0.hasPrefix("\(refusalRule($0)): ") })
        #expect(j.accepted(marketing.planHash) == nil)
        // Refused once, refused again without a second decision.
        #expect(await refusal(j, marketing)?.refusals == refused.refusals)

        let waiting = judge(try await governor(approvalHours: 24))
        #expect(await refusal(waiting, try offer(plan))?.refusals.map(\.rule) == ["approval"])
        #expect(FedGateMetrics.label(rule: "approval") == "approval" && FedGateMetrics.label(rule: "made-up") == "other")
    }

    func refusalRule(_ reason: String) -> String { String(reason.prefix { $0 != ":" }) }

    @Test("a plan awaiting a person's approval is asked about again at each offer, decided once, and accepted once the approval is recorded")
    func approvalAskedAgain() async throws {
        let g = try await governor(approvalHours: 24), j = judge(g)
        let o = try offer(Round.plan(rounds: 3, quorum: 2), round: 0)
        #expect(await refusal(j, o)?.reasons == ["approval: the plan waits for a person's approval at this silo"])
        #expect(await refusal(j, o)?.refusals.map(\.rule) == ["approval"], "still awaited: not refused for good")
        #expect(j.accepted(o.planHash) == nil)
        let governance = try #require(g.ledger.backend as? any GovernanceBackend)
        try await governance.decideApproval(planHash: o.planHash, silo: "hospital-0", approve: true, actor: "silo-admin", at: Date())
        var next = o
        next.round = 1
        let accepted = try await j.accept(next)
        #expect(accepted.plan.contentHash == o.planHash && j.accepted(o.planHash) != nil)
        let decisions = try await g.ledger.backend.auditRecords().filter { $0.action == "policy.decision" }
        #expect(decisions.count == 1, "the policy decided once; only the approval was read again")

        // A rejected approval is not an approval: the plan stays refused by the approval rule.
        let other = try offer(Round.plan(rounds: 4, quorum: 2))
        #expect(await refusal(j, other)?.refusals.map(\.rule) == ["approval"])
        try await governance.decideApproval(planHash: other.planHash, silo: "hospital-0", approve: false, actor: "silo-admin", at: Date())
        #expect(await refusal(j, other)?.refusals.map(\.rule) == ["approval"])
    }

    @Test("a round's budget is reserved once on each data set, committed as its update leaves, and a round that ends without one releases it")
    func reservations() async throws {
        let g = try await governor()
        let budget = BudgetReservations(ledger: g.ledger, silo: "hospital-0", logger: .init(label: "test"))
        let event = try TrainingPlan.parse(Round.plan(rounds: 3, quorum: 2), file: "plan").roundEvent()
        let one = RoundKey("plan-a", 1), two = RoundKey("plan-a", 2)
        try await budget.reserve(one, event, datasets: ["breast-cancer-2024"])
        try await budget.reserve(one, event, datasets: ["breast-cancer-2024"])
        try await budget.reserve(two, event, datasets: ["breast-cancer-2024"])
        func states() async throws -> [Int: LedgerState] {
            Dictionary(uniqueKeysWithValues: try await g.ledger.backend.entries(dataset: "breast-cancer-2024").map { ($0.round, $0.state) })
        }
        #expect(try await states() == [1: .reserved, 2: .reserved], "a repeated offer reserves nothing more")
        try await budget.commit(one)
        await budget.release(two)
        #expect(try await states() == [1: .committed, 2: .released])
        // Settled once: a second commit or release of the same round changes nothing.
        try await budget.commit(one)
        await budget.release(two)
        #expect(try await states() == [1: .committed, 2: .released])
    }

    @Test("a reservation refused on one data set releases what the others reserved; the stream's end and a restart release what never left")
    func reservationsReleased() async throws {
        let g = try await governor()
        let budget = BudgetReservations(ledger: g.ledger, silo: "hospital-0", logger: .init(label: "test"))
        let event = try TrainingPlan.parse(Round.plan(rounds: 3, quorum: 2), file: "plan").roundEvent()
        await #expect(throws: LedgerError.self) {
            try await budget.reserve(RoundKey("plan-a", 1), event, datasets: ["breast-cancer-2024", "no-such-data-set"])
        }
        var entries = try await g.ledger.backend.entries(dataset: "breast-cancer-2024")
        #expect(entries.map(\.state) == [.released])
        try await budget.reserve(RoundKey("plan-a", 2), event, datasets: ["breast-cancer-2024"])
        await budget.releaseAll()
        try await budget.reserve(RoundKey("plan-a", 3), event, datasets: ["breast-cancer-2024"])
        // A new gateway on the same ledger: round 3's reservation was left by the earlier run.
        await BudgetReservations(ledger: g.ledger, silo: "hospital-0", logger: .init(label: "test")).releaseLeftovers(dataset: "breast-cancer-2024")
        entries = try await g.ledger.backend.entries(dataset: "breast-cancer-2024")
        #expect(entries.allSatisfy { $0.state == .released } && entries.count == 3)
    }
}
