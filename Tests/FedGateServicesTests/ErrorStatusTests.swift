import FedGateRounds
import FedGateStore
import Foundation
import GRPCCore
import Testing
@testable import FedGateConsortiumTesting
@testable import FedGateServices

/// Each domain's errors reach an RPC caller with one status, chosen in `ErrorStatus`, and their
/// own words as the message.
@Suite("Domain errors and their RPC status")
struct ErrorStatusTests {
    @Test("the broker's plan and round errors: already running, unknown, out of turn, an unusable checkpoint")
    func brokerErrors() {
        let cases: [(BrokerError, RPCError.Code)] = [
            (.planAlreadyRunning(plan: "ab12cd34ef56aa"), .alreadyExists),
            (.unknownPlan(plan: "ab12cd34ef56aa"), .notFound),
            (.notAskedToEvaluate(silo: "hospital-b", plan: "ab12cd34ef56aa"), .failedPrecondition),
            (.roundNotTraining(plan: "ab12cd34ef56aa", round: 3), .failedPrecondition),
            (.checkpointUnusable(plan: "ab12cd34ef56aa", round: 2, problem: "is missing from the store"), .dataLoss),
        ]
        for (error, code) in cases {
            let status = ErrorStatus.rpcError(for: error)
            #expect(status.code == code && status.message == error.description, "\(error)")
            #expect(error.description.contains("ab12cd34ef56"), "names the plan: \(error)")
        }
    }

    @Test("a silo's message out of turn is a failed precondition naming the silo")
    func roundRefusals() {
        let refusals: [RoundRefusal] = [.notOffered("x"), .offerClosed("x"), .alreadyAnswered("x"), .outOfPhase("x", phase: "closed"),
                                        .notParticipant("x", round: 4), .notParticipant("x", round: nil), .alreadyUploaded("x")]
        for r in refusals {
            let status = ErrorStatus.rpcError(for: r)
            #expect(status.code == .failedPrecondition && status.message.hasPrefix("x"), "\(r)")
        }
        #expect(RoundRefusal.notParticipant("x", round: 4).description == "x is not a participant of round 4")
        #expect(RoundRefusal.notParticipant("x", round: nil).description == "x is not a participant of this round")
    }

    @Test("a payload without the asked tensor or of the wrong shape is an invalid argument; the ledger keeps its own statuses")
    func payloadAndLedger() {
        #expect(ErrorStatus.rpcError(for: ModelPayload.MissingTensor(tensor: "delta", present: ["parameters"])).code == .invalidArgument)
        #expect(ErrorStatus.rpcError(for: LedgerError.unavailable("connection refused")).code == .unavailable)
        #expect(ErrorStatus.rpcError(for: LedgerError.budgetExceeded(dataset: "d", cap: "per-plan", epsilon: 6, limit: 5)).code == .resourceExhausted)
    }
}
