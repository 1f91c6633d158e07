import FedGateRounds
import FedGateStore
import Testing
@testable import FedGateConsortiumTesting
@testable import FedGateServices

/// The round machine's stages and the store's round states are one vocabulary.
@Suite("Round stages and stored round states")
struct RoundStageTests {
    @Test("every stage of the round's machine is a state the store records, and back, under the same name")
    func sameNames() {
        #expect(RoundStage.allCases.map(\.rawValue) == RoundRecord.State.allCases.map(\.rawValue))
        for stage in RoundStage.allCases { #expect(RoundStage(RoundRecord.State(stage)) == stage) }
    }
}
