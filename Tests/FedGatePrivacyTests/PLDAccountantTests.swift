import Foundation
import Testing
import FedGateTestSupport
@testable import FedGatePrivacy

@Suite("PLD accountant against dp-accounting's PLDAccountant")
struct PLDAccountantTests {
    @Test("ε of a DP-SGD run is within 1e-3 of dp-accounting's PLD ε and never above our RDP ε",
          arguments: ReferenceCases.family("b_pld_epsilon"))
    func epsilonMatchesReference(_ c: ReferenceCases.Case) async throws {
        try await onCPULane {
            let expected = try #require(c.result("dp_accounting"))["epsilon"]!
            let event = DPEvent.dpsgd(samplingProbability: c.double("q"), noiseMultiplier: c.double("sigma"), steps: c.int("steps"))
            let pld = try epsilon(of: event, delta: c.double("delta"), accountant: .pld)
            let rdp = try epsilon(of: event, delta: c.double("delta"), accountant: .rdp)
            #expect(abs(pld - expected) <= 1e-3, "\(c.id): ours \(pld) vs dp-accounting \(expected)")
            #expect(pld <= rdp + 1e-3, "\(c.id): PLD \(pld) above RDP \(rdp)")
        }
    }

    @Test("heterogeneous histories: ε and δ within 1e-3 of dp-accounting")
    func heterogeneous() async throws {
        try await onCPULane {
            for c in ReferenceCases.family("c_heterogeneous") + ReferenceCases.family("c_heterogeneous_delta") {
                let history = c.parameters["history"] as! [[String: NSNumber]]
                var accountant = PLDAccountant()
                try accountant.compose(.composed(history.map {
                    .dpsgd(samplingProbability: $0["q"]!.doubleValue, noiseMultiplier: $0["sigma"]!.doubleValue, steps: $0["steps"]!.intValue)
                }))
                let expected = try #require(c.result("dp_accounting", methodContains: "PLD"))
                if c.family == "c_heterogeneous" {
                    let eps = try accountant.epsilon(delta: c.double("delta"))
                    #expect(abs(eps - expected["epsilon"]!) <= 1e-3, "\(c.id): \(eps) vs \(expected["epsilon"]!)")
                } else {
                    let delta = try accountant.delta(epsilon: c.double("epsilon"))
                    #expect(abs(delta - expected["delta"]!) <= 1e-3 * expected["delta"]!, "\(c.id): \(delta) vs \(expected["delta"]!)")
                }
            }
        }
    }

    @Test("one Gaussian release at the analytic σ costs exactly the ε it was calibrated for")
    func gaussianRelease() throws {
        for c in ReferenceCases.family("e_gaussian_calibration") {
            let row = try #require(c.result("dp_accounting", methodContains: "PLDAccountant().compose(GaussianDpEvent(sigma)).get_epsilon(delta), analytic"))
            let eps = try epsilon(of: .gaussian(noiseMultiplier: row["sigma"]!), delta: c.double("delta"), accountant: .pld)
            #expect(abs(eps - row["epsilon"]!) <= 1e-3, "\(c.id): \(eps) vs \(row["epsilon"]!)")
        }
    }

    @Test("the discrete Gaussian's ε matches the exact value", arguments: ReferenceCases.family("f_discrete_gaussian"))
    func discreteGaussian(_ c: ReferenceCases.Case) throws {
        let expected = try #require(c.result("dp_accounting"))["epsilon"]!
        let event = DPEvent.selfComposed(event: .discreteGaussian(sigma: c.double("sigma"), sensitivity: c.double("sensitivity")),
                                         count: c.int("compositions"))
        let eps = try epsilon(of: event, delta: c.double("delta"), accountant: .pld)
        #expect(abs(eps - expected) <= 1e-3, "\(c.id): \(eps) vs \(expected)")
        if let exact = c.result("own_mpmath") { #expect(eps >= exact["epsilon"]! - 1e-9, "pessimistic: never below the exact ε") }
    }

    @Test("the Laplace mechanism never costs more than its pure ε = 1/b, and RDP is never tighter than PLD")
    func laplace() throws {
        for b in [0.5, 2.0] {
            let pld = try epsilon(of: .laplace(noiseMultiplier: b), delta: 1e-6, accountant: .pld)
            let rdp = try epsilon(of: .laplace(noiseMultiplier: b), delta: 1e-6, accountant: .rdp)
            #expect(pld <= 1 / b + 1e-3, "b = \(b): \(pld)")
            #expect(pld > 0.9 / b, "b = \(b): \(pld)")
            #expect(rdp >= pld - 1e-3, "b = \(b): RDP \(rdp) vs PLD \(pld)")
        }
        // Sampled Laplace is cheaper than the full mechanism.
        let sampled = try epsilon(of: .poissonSampled(samplingProbability: 0.1, event: .laplace(noiseMultiplier: 1)), delta: 1e-6, accountant: .pld)
        #expect(sampled < log(1 + 0.1 * (exp(1) - 1)) + 1e-3)
    }

    @Test("an event whose loss grid would exhaust memory is refused with advice, and the accountant is unchanged")
    func tooLarge() throws {
        var accountant = PLDAccountant()
        try accountant.compose(.gaussian(noiseMultiplier: 2))
        let before = try accountant.epsilon(delta: 1e-5)
        let error = #expect(throws: PrivacyError.self) { try accountant.compose(.gaussian(noiseMultiplier: 0.01)) }
        #expect(error?.reason.contains("RDP accountant") == true)
        #expect(try accountant.epsilon(delta: 1e-5) == before)
    }

    @Test("bad δ or ε is refused")
    func badInput() throws {
        let accountant = PLDAccountant()
        #expect(throws: PrivacyError.self) { try accountant.epsilon(delta: 0) }
        #expect(throws: PrivacyError.self) { try accountant.epsilon(delta: .nan) }
        #expect(throws: PrivacyError.self) { try accountant.delta(epsilon: -0.5) }
    }
}
