import FedGateProto
import Foundation
import Testing
@testable import FedGateCLI

/// What `plan status` and `plan watch` print about a plan waiting for approvals.
@Suite("Plan views")
struct PlanViewTests {
    @Test("a plan waiting before its first round names the silos whose approval it waits for, and who accepted")
    func awaitingApproval() {
        var s = Fedgate_V1_PlanStatusResponse()
        s.planHash = "abc"
        s.state = "running"
        s.currentPhase = "awaiting approval"
        s.accepted = ["hospital-a", "hospital-b"]
        s.refusals = ["clinic-c: approval: the plan waits for a person's approval at this silo", "bank-d: purpose: 'marketing' is not allowed"]
        #expect(PlanView.awaited(s) == ["clinic-c"], "only a refusal by the approval rule is awaited")
        let text = PlanView.summary(s)
        #expect(text.contains("now: waiting, before round 1, for a person's approval at clinic-c; accepted by hospital-a, hospital-b"), "\(text)")
        #expect(text.contains("refused by bank-d: purpose"))
        s.currentPhase = "admitting"
        #expect(!PlanView.summary(s).contains("waiting"))
    }
}
