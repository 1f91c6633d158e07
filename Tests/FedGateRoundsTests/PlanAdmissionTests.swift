import FedGateRounds
import Foundation
import Testing

/// Whether a plan may begin: the silos' answers to its admission offer against its quorum, and how
/// long it waits for people's approvals. No network and no clock: the time is given.
@Suite("Plan admission: approvals that a plan waits for")
struct PlanAdmissionTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    var rule: PlanAdmission { PlanAdmission(quorum: 3, waitUntil: t0.addingTimeInterval(3600)) }

    @Test("a refusal only by the approval rule is an approval awaited; any other reason beside it is a refusal")
    func answers() {
        #expect(PlanAdmission.answer(accepted: true, reasons: []) == .accepted)
        #expect(PlanAdmission.answer(accepted: false, reasons: ["approval: the plan waits for a person's approval at this silo"]) == .awaitingApproval)
        #expect(PlanAdmission.answer(accepted: false, reasons: ["approval: waits", "purpose: 'marketing' is not allowed"]) == .refused)
        #expect(PlanAdmission.answer(accepted: false, reasons: ["purpose: 'marketing' is not allowed"]) == .refused)
        #expect(PlanAdmission.answer(accepted: false, reasons: []) == .refused, "a refusal without a reason waits for nothing")
        #expect(PlanAdmission.answer(accepted: false, reasons: ["approvals: x"]) == .refused)
    }

    @Test("a quorum of acceptances begins at once, whoever else waits for approval")
    func quorumBegins() {
        let answers: [String: PlanAdmission.Answer] = ["a": .accepted, "b": .accepted, "c": .accepted, "d": .awaitingApproval]
        #expect(rule.decide(answers, at: t0) == .begin)
        #expect(rule.decide(answers, at: t0.addingTimeInterval(7200)) == .begin, "the deadline is for waiting only")
    }

    @Test("too few acceptances with approvals that would make the quorum: the plan waits for exactly those silos, until its deadline")
    func waitsForApprovals() {
        var answers: [String: PlanAdmission.Answer] = ["c": .awaitingApproval, "a": .accepted, "b": .accepted, "x": .refused]
        #expect(rule.decide(answers, at: t0) == .wait(for: ["c"]))
        #expect(rule.decide(answers, at: t0.addingTimeInterval(3599)) == .wait(for: ["c"]))
        answers["a"] = .awaitingApproval
        #expect(rule.decide(answers, at: t0) == .wait(for: ["a", "c"]), "every awaited silo is named, in order")
        // At the deadline: the plan gives up, naming the silos and its quorum.
        guard case .giveUp(let reason) = rule.decide(answers, at: t0.addingTimeInterval(3600)) else {
            Issue.record("the plan should give up at its deadline")
            return
        }
        #expect(reason.contains("a, c") && reason.contains("1 accepted, quorum is 3"), "\(reason)")
    }

    @Test("the admission offer closes when everyone asked answered or a quorum accepted, not before: a silent silo does not hold a plan the others can run")
    func closes() {
        let asked: Set = ["a", "b", "c", "d"]
        #expect(!rule.canDecide(asked: asked, answers: ["a": .accepted, "b": .accepted, "c": .awaitingApproval]))
        #expect(rule.canDecide(asked: asked, answers: ["a": .accepted, "b": .accepted, "d": .accepted]))
        #expect(rule.canDecide(asked: asked, answers: ["a": .refused, "b": .refused, "c": .awaitingApproval, "d": .refused]))
        #expect(rule.canDecide(asked: [], answers: [:]), "nobody to ask")
    }

    @Test("when even every awaited approval cannot make the quorum, or nobody waits for one, the rounds begin and abort on their own")
    func beginsShort() {
        #expect(rule.decide(["a": .accepted, "c": .awaitingApproval, "x": .refused], at: t0) == .beginShort)
        #expect(rule.decide(["a": .accepted, "b": .accepted], at: t0) == .beginShort)
        #expect(rule.decide([:], at: t0) == .beginShort, "no silo answered: the round's own offer says why")
        #expect(PlanAdmission(quorum: 1, waitUntil: t0).decide(["a": .awaitingApproval], at: t0) == .giveUp(
            "the plan waited for approval at a until its approval deadline (0 accepted, quorum is 1); submit it again once they approve it"))
    }
}
