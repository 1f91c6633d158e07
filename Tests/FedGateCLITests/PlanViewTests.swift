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

    @Test("a statistics plan's figures print with their histogram (withheld cells named) and quartiles; a histogram whose parts do not line up is left out, not indexed past its end")
    func statistics() throws {
        var s = Fedgate_V1_PlanStatusResponse()
        (s.planHash, s.state) = ("abc", "finished")
        var c = Fedgate_V1_ColumnStatistics()
        (c.column, c.mean, c.deviation) = ("mean_radius", 14.1, 3.5)
        (c.edges, c.counts, c.withheld, c.quartiles) = ([6, 10, 14], [41.3, 0], [false, true], [11.7, 13.2, 15.8])
        var area = Fedgate_V1_ColumnStatistics()
        (area.column, area.mean, area.deviation) = ("mean_area", 655, 351)
        var r = Fedgate_V1_StatisticsResult()
        (r.count, r.silos, r.columns) = (563, ["hospital-0", "hospital-1"], [c, area])
        s.statistics = r
        let text = PlanView.summary(s)
        #expect(text.contains("statistics of about 563 rows at hospital-0, hospital-1"), "\(text)")
        #expect(text.contains("[6, 10) 41") && text.contains("[10, 14) withheld") && text.contains("quartiles 11.7, median 13.2, 15.8"), "\(text)")
        #expect(text.contains("mean_area") && text.contains("mean 655"))
        c.edges = [6, 10]
        r.columns = [c]
        s.statistics = r
        #expect(!PlanView.summary(s).contains("histogram"), "a histogram with one edge too few is not printed")
    }
}
