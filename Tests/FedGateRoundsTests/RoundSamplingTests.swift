import Testing
@testable import FedGateRounds

@Suite("Client sampling: a plan's draw of silos per round")
struct RoundSamplingTests {
    static let silos = (0..<10).map { "silo-\($0)" }

    @Test("a fraction rounds up and never goes under its floor; a count is exact; neither asks for more silos than are eligible")
    func sizes() {
        #expect(RoundSampling(.fraction(0.3, floor: 2)).count(of: 10) == 3)
        #expect(RoundSampling(.fraction(0.25, floor: 2)).count(of: 10) == 3, "2.5 rounds up")
        #expect(RoundSampling(.fraction(0.1, floor: 4)).count(of: 10) == 4)
        #expect(RoundSampling(.fraction(0.5, floor: 4)).count(of: 3) == 3)
        #expect(RoundSampling(.count(5)).count(of: 10) == 5 && RoundSampling(.count(5)).count(of: 2) == 2)
    }

    @Test("the draw is recomputable from the plan's hash and the round, does not depend on the order silos are listed in, and changes from round to round")
    func deterministic() {
        let draw = RoundSampling(.count(4))
        let a = draw.sample(Self.silos, planHash: "ab12", round: 3)
        #expect(a.count == 4 && a == a.sorted() && Set(a).isSubset(of: Set(Self.silos)))
        #expect(draw.sample(Self.silos.reversed(), planHash: "ab12", round: 3) == a)
        let rounds = (1...20).map { draw.sample(Self.silos, planHash: "ab12", round: $0) }
        #expect(Set(rounds).count > 10, "twenty rounds drew only \(Set(rounds).count) different samples")
        #expect(draw.sample(Self.silos, planHash: "cd34", round: 3) != a || draw.sample(Self.silos, planHash: "cd34", round: 4) != rounds[3])
    }

    @Test("over many rounds every silo is drawn about equally often (3 of 10 over 2000 rounds: each within 5 standard deviations of 600)")
    func fair() {
        let draw = RoundSampling(.fraction(0.3, floor: 1))
        var counts: [String: Int] = [:]
        for round in 1...2000 { for silo in draw.sample(Self.silos, planHash: "plan", round: round) { counts[silo, default: 0] += 1 } }
        let sd = (2000 * 0.3 * 0.7).squareRoot()
        #expect(Self.silos.allSatisfy { abs(Double(counts[$0] ?? 0) - 600) < 5 * sd }, "\(counts)")
    }
}
