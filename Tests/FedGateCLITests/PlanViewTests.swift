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

/// What `fedgate model deployments` prints.
@Suite("Deployment view")
struct DeploymentViewTests {
    @Test("the view says which version each silo runs, each deployment's gate and checks, the alert, the rollback's time, and why a canary is not yet promotable")
    func view() {
        var r = Fedgate_V1_DeploymentsResponse()
        r.running = ["clinic-a": 1, "clinic-b": 1]
        var canary = Fedgate_V1_DeploymentInfo()
        (canary.id, canary.version, canary.stage, canary.silos, canary.state, canary.by) = (3, 2, "canary", ["clinic-a", "clinic-b"], "rolled_back", "ada")
        (canary.maxPsi, canary.watch, canary.alertSilo, canary.alertReasons, canary.rollbackSeconds) = (0.25, ["age"], "clinic-b", ["drift: age has PSI 1.9"], 0.031)
        var check = Fedgate_V1_MonitorCheck()
        (check.silo, check.rows, check.accuracy, check.psi, check.pValue, check.reasons) = ("clinic-b", 140, -1, ["age": 1.9], ["age": 1e-9], ["drift: age has PSI 1.9"])
        canary.checks = [check]
        var waiting = Fedgate_V1_DeploymentInfo()
        (waiting.id, waiting.version, waiting.stage, waiting.silos, waiting.state, waiting.promotionBlockers) = (4, 3, "canary", ["clinic-a"], "monitoring",
                                                                                                                ["clinic-a has not passed a monitoring check yet"])
        r.deployments = [canary, waiting]
        let text = ModelCommand.Deployments.text(r)
        #expect(text.contains("running: clinic-a v1, clinic-b v1\n"))
        #expect(text.contains("deployment 3: v2 canary to clinic-a, clinic-b by ada at "), "\(text)")
        #expect(text.contains(": rolled back\n  gate: PSI ≤ 0.250 on age\n"), "\(text)")
        #expect(text.contains("  check clinic-b: 140 rows, worst PSI age 1.900 (p 1.0e-09): FAILED, drift: age has PSI 1.9\n"), "\(text)")
        #expect(text.contains("  ALERT from clinic-b: drift: age has PSI 1.9\n  rolled back in 0.031 s"), "\(text)")
        #expect(text.contains("  not yet promotable: clinic-a has not passed a monitoring check yet\n"), "\(text)")
    }
}

@Suite("Statistics view")
struct StatisticsViewTests {
    @Test("a category's one-hot input is shown as its share of the rows, a numeric column as its mean and deviation")
    func shares() {
        var s = Fedgate_V1_PlanStatusResponse()
        var stats = Fedgate_V1_StatisticsResult()
        (stats.count, stats.silos) = (333, ["biscoe", "dream"])
        var mass = Fedgate_V1_ColumnStatistics(), female = Fedgate_V1_ColumnStatistics()
        (mass.column, mass.mean, mass.deviation) = ("body_mass_g", 4207, 802)
        (female.column, female.mean) = ("sex=female", 0.495)
        stats.columns = [mass, female]
        s.statistics = stats
        let lines = PlanView.statisticsLines(s)
        #expect(lines.contains { $0.contains("body_mass_g") && $0.contains("mean 4207  deviation 802") }, "\(lines)")
        #expect(lines.contains { $0.contains("sex=female") && $0.contains("share 49.5 % (about 165 rows)") }, "\(lines)")
    }
}
