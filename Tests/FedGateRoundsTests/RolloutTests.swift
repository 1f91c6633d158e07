import FedGateLearning
import Foundation
import Testing
@testable import FedGateRounds

@Suite("Staged rollout: canary, promotion, checks and automatic rollback")
struct RolloutTests {
    static let gate = Rollout.Gate(maxPSI: 0.25, minAccuracy: 0.8, watch: ["age", "bmi"], positions: [0, 3])
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let reference = Rollout.Reference(histograms: [[20, 40, 40, 20], [20, 40, 40, 20]], sigma: 3)

    /// A release's figures: 120 rows, 100 labelled with `right` right, both columns as `bins`.
    static func figures(right: Double = 95, bins: [Double] = [20, 40, 40, 20]) throws -> MonitorFigures {
        try MonitorFigures(released: [120, 100, right] + bins + bins, columns: 2)
    }

    /// A canary of version 1 at a and b, both installed with references.
    static func installedCanary() throws -> Rollout {
        var rollout = Rollout()
        let d = try rollout.deploy(version: 1, stage: .canary, silos: ["b", "a"], everyone: ["a", "b", "c"], gate: gate, by: "ada", at: t0)
        #expect(d.silos == ["a", "b"] && Rollout.toSend(d) == ["a", "b"] && d.state == .installing && d.previous == ["a": 0, "b": 0])
        #expect(try rollout.answered(silo: "a", deployment: 1, version: 1, reference: reference, problem: nil, at: t0) == .installed)
        #expect(rollout.inProgress?.state == .installing)
        #expect(try rollout.answered(silo: "b", deployment: 1, version: 1, reference: reference, problem: nil, at: t0) == .installed)
        #expect(rollout.inProgress?.state == .monitoring && rollout.running == ["a": 1, "b": 1])
        return rollout
    }

    @Test("a canary passes once each of its silos passed a check; then the version goes to every silo, the canary's silos keeping their reference and installing nothing again")
    func canaryThenAll() throws {
        var rollout = try Self.installedCanary()
        #expect(throws: Rollout.Refusal.self) { try rollout.deploy(version: 1, stage: .all, silos: [], everyone: ["a", "b", "c"], gate: Self.gate, by: "ada", at: Self.t0) }
        let first = try rollout.checked(silo: "a", version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0)
        #expect(first.check.passed && !first.canaryPassed && first.rollback == nil)
        let second = try rollout.checked(silo: "b", version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0)
        #expect(second.canaryPassed && rollout.deployments[0].state == .passed && rollout.inProgress == nil)
        let all = try rollout.deploy(version: 1, stage: .all, silos: [], everyone: ["a", "b", "c"], gate: Self.gate, by: "ada", at: Self.t0)
        #expect(Rollout.toSend(all) == ["c"] && all.references["a"] == Self.reference && rollout.deployments[0].state == .promoted)
        #expect(try rollout.answered(silo: "c", deployment: 2, version: 1, reference: Self.reference, problem: nil, at: Self.t0) == .installed)
        // Live at every silo: monitored, and not in the way of the next version's canary.
        #expect(rollout.running == ["a": 1, "b": 1, "c": 1] && rollout.deployments[1].state == .monitoring && rollout.inProgress == nil)
    }

    @Test("a drifted check rolls every silo that installed the deployment back to the version it ran before, and the rollback's time runs from the alert to the last silo back")
    func driftRollsBack() throws {
        var rollout = try Self.installedCanary()
        _ = try rollout.checked(silo: "a", version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0)
        _ = try rollout.checked(silo: "b", version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0)
        _ = try rollout.deploy(version: 1, stage: .all, silos: [], everyone: ["a", "b", "c"], gate: Self.gate, by: "ada", at: Self.t0)
        _ = try rollout.answered(silo: "c", deployment: 2, version: 1, reference: Self.reference, problem: nil, at: Self.t0)
        // Version 2 as a canary at a and c; c's fresh rows have moved.
        _ = try rollout.deploy(version: 2, stage: .canary, silos: ["a", "c"], everyone: ["a", "b", "c"], gate: Self.gate, by: "ada", at: Self.t0)
        for silo in ["a", "c"] { _ = try rollout.answered(silo: silo, deployment: 3, version: 2, reference: Self.reference, problem: nil, at: Self.t0) }
        let alertAt = Self.t0.addingTimeInterval(60)
        let verdict = try rollout.checked(silo: "c", version: 2, figures: try Self.figures(bins: [2, 8, 40, 70]), sigma: 3, at: alertAt)
        #expect(!verdict.check.passed && verdict.rollback == ["a": 1, "c": 1], "\(verdict)")
        #expect(verdict.check.reasons.first?.hasPrefix("drift: age has PSI") == true || verdict.check.reasons.first?.hasPrefix("drift: bmi has PSI") == true)
        #expect(rollout.inProgress?.state == .rollingBack && rollout.owed(to: "c")! == (1, true) && rollout.owed(to: "b") == nil)
        // No new deployment while the rollback runs; a check of the version being rolled back is not judged.
        #expect(throws: Rollout.Refusal.self) { try rollout.deploy(version: 1, stage: .canary, silos: ["b"], everyone: [], gate: Self.gate, by: "ada", at: alertAt) }
        #expect(throws: Rollout.Refusal.self) { try rollout.checked(silo: "a", version: 2, figures: try Self.figures(), sigma: 3, at: alertAt) }
        #expect(try rollout.answered(silo: "a", deployment: 3, version: 1, reference: nil, problem: nil, at: alertAt.addingTimeInterval(0.5)) == .returned(seconds: nil))
        #expect(rollout.deployments.last?.state == .rollingBack, "c is not back yet")
        #expect(try rollout.answered(silo: "c", deployment: 3, version: 1, reference: nil, problem: nil, at: alertAt.addingTimeInterval(1.25)) == .returned(seconds: 1.25))
        #expect(rollout.running == ["a": 1, "b": 1, "c": 1] && rollout.deployments.last?.state == .rolledBack && rollout.inProgress == nil)
        // The rolled-back version cannot be promoted.
        #expect { try rollout.deploy(version: 2, stage: .all, silos: [], everyone: ["a", "b", "c"], gate: Self.gate, by: "ada", at: alertAt) } throws: {
            "\($0)".contains("rolled back")
        }
    }

    @Test("a canary silo that installs after another's check failed is sent back too, and the rollback ends when it is back")
    func lateInstallGoesBack() throws {
        var rollout = Rollout()
        _ = try rollout.deploy(version: 4, stage: .canary, silos: ["a", "b"], everyone: [], gate: Self.gate, by: "ada", at: Self.t0)
        _ = try rollout.answered(silo: "a", deployment: 1, version: 4, reference: Self.reference, problem: nil, at: Self.t0)
        let verdict = try rollout.checked(silo: "a", version: 4, figures: try Self.figures(right: 10), sigma: 3, at: Self.t0)
        #expect(verdict.rollback == ["a": 0])
        #expect(try rollout.answered(silo: "b", deployment: 1, version: 4, reference: Self.reference, problem: nil, at: Self.t0) == .mustReturn(to: 0))
        #expect(try rollout.answered(silo: "a", deployment: 1, version: 0, reference: nil, problem: nil, at: Self.t0.addingTimeInterval(1)) == .returned(seconds: nil))
        #expect(try rollout.answered(silo: "b", deployment: 1, version: 0, reference: nil, problem: nil, at: Self.t0.addingTimeInterval(2)) == .returned(seconds: 2))
        #expect(rollout.running.isEmpty && rollout.deployments[0].state == .rolledBack)
    }

    @Test("a live version whose check fails where nothing ran before it raises the alert and stays: no silo is left without a model; later checks are still judged")
    func liveVersionAlertsOnly() throws {
        var rollout = try Self.installedCanary()
        for silo in ["a", "b"] { _ = try rollout.checked(silo: silo, version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0) }
        _ = try rollout.deploy(version: 1, stage: .all, silos: [], everyone: ["a", "b"], gate: Self.gate, by: "ada", at: Self.t0)
        let verdict = try rollout.checked(silo: "b", version: 1, figures: try Self.figures(bins: [2, 8, 40, 70]), sigma: 3, at: Self.t0)
        #expect(verdict.rollback == [:] && rollout.deployments[1].state == .alerted && rollout.running == ["a": 1, "b": 1])
        #expect(rollout.inProgress == nil && rollout.deployments[1].alert?.silo == "b")
        #expect(try rollout.checked(silo: "a", version: 1, figures: try Self.figures(), sigma: 3, at: Self.t0).check.passed)
    }

    @Test("an accuracy a little under the gate that the noise explains passes; one far under fails")
    func qualityNeedsSignificance() throws {
        var rollout = try Self.installedCanary()
        // 76 of 100 against a floor of 0.8, with σ = 3 on each count: p ≈ 0.2.
        #expect(try rollout.checked(silo: "a", version: 1, figures: try Self.figures(right: 76), sigma: 3, at: Self.t0).check.passed)
        #expect(try !rollout.checked(silo: "b", version: 1, figures: try Self.figures(right: 50), sigma: 3, at: Self.t0).check.passed)
    }

    @Test("a check under the gate's accuracy fails for quality; a silo's first deployment rolls back to none (version 0)")
    func qualityRollsBackToNone() throws {
        var rollout = try Self.installedCanary()
        let verdict = try rollout.checked(silo: "b", version: 1, figures: try Self.figures(right: 60), sigma: 3, at: Self.t0)
        #expect(verdict.check.reasons.count == 1 && verdict.check.reasons[0].hasPrefix("quality: accuracy 0.6000 < 0.8000 on 100 labelled rows (p ")
                && verdict.rollback == ["a": 0, "b": 0], "\(verdict.check.reasons)")
        _ = try rollout.answered(silo: "a", deployment: 1, version: 0, reference: nil, problem: nil, at: Self.t0)
        _ = try rollout.answered(silo: "b", deployment: 1, version: 0, reference: nil, problem: nil, at: Self.t0)
        #expect(rollout.running.isEmpty && rollout.deployments[0].state == .rolledBack && rollout.deployments[0].rollbackSeconds == 0)
    }

    @Test("a silo that cannot install or does not monitor blocks the canary's promotion, named; answers and checks nobody asked for are refused")
    func blockersAndStrangers() throws {
        var rollout = Rollout()
        _ = try rollout.deploy(version: 3, stage: .canary, silos: ["a", "b"], everyone: [], gate: Self.gate, by: "ada", at: Self.t0)
        #expect(try rollout.answered(silo: "a", deployment: 1, version: 3, reference: nil, problem: "the model's inputs are not this silo's columns", at: Self.t0) != .installed)
        _ = try rollout.answered(silo: "b", deployment: 1, version: 3, reference: nil, problem: nil, at: Self.t0)
        let blockers = rollout.deployments[0].promotionBlockers
        #expect(blockers.count == 2 && blockers[0].contains("a: the model's inputs") && blockers[1].contains("does not monitor"), "\(blockers)")
        #expect(rollout.running == ["b": 3] && rollout.inProgress?.state == .monitoring)
        #expect(throws: Rollout.Refusal.self) { try rollout.answered(silo: "z", deployment: 1, version: 3, reference: nil, problem: nil, at: Self.t0) }
        #expect(throws: Rollout.Refusal.self) { try rollout.checked(silo: "a", version: 3, figures: try Self.figures(), sigma: 3, at: Self.t0) }
        #expect(throws: Rollout.Refusal.self) { try rollout.checked(silo: "b", version: 3, figures: try Self.figures(), sigma: 3, at: Self.t0) }
        let wrong = Rollout.Reference(histograms: [[1, 2, 3, 4]], sigma: 3)
        var other = Rollout()
        _ = try other.deploy(version: 1, stage: .canary, silos: ["a"], everyone: [], gate: Self.gate, by: "ada", at: Self.t0)
        #expect(throws: Rollout.Refusal.self) { try other.answered(silo: "a", deployment: 1, version: 1, reference: wrong, problem: nil, at: Self.t0) }
        #expect(throws: Rollout.Refusal.self) { try other.deploy(version: 1, stage: .canary, silos: [], everyone: [], gate: Self.gate, by: "ada", at: Self.t0) }
    }
}
