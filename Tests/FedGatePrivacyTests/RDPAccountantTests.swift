import Foundation
import Testing
@testable import FedGatePrivacy

@Suite("RDP accountant against dp-accounting and Opacus")
struct RDPAccountantTests {
    @Test("ε of a DP-SGD run matches the exact per-order RDP on dp-accounting's orders",
          arguments: ReferenceCases.family("a_rdp_epsilon"))
    func epsilonMatchesReference(_ c: ReferenceCases.Case) throws {
        let expected = try #require(c.result("opacus+dp_accounting"))
        var accountant = RDPAccountant()
        try accountant.compose(.dpsgd(samplingProbability: c.double("q"), noiseMultiplier: c.double("sigma"), steps: c.int("steps")))
        let (eps, order) = try accountant.epsilonAndOrder(delta: c.double("delta"))
        #expect(close(eps, expected["epsilon"]!, rel: 1e-9, abs: 1e-13), "\(c.id): ε \(eps) vs \(expected["epsilon"]!)")
        #expect(order == expected["optimal_order"]!, "\(c.id)")
    }

    @Test("per-order RDP equals Opacus' exact computation (and never exceeds dp-accounting's bound)",
          arguments: ReferenceCases.family("a_rdp_curve"))
    func curveMatchesReference(_ c: ReferenceCases.Case) throws {
        let opacus = try #require(c.results.first { $0.library == "opacus" && $0.doubles("orders").count == 156 })
        let bound = try #require(c.result("dp_accounting"))
        let orders = opacus.doubles("orders")
        let ours = try RDPAccountant.rdp(of: .poissonSampled(samplingProbability: c.double("q"), event: .gaussian(noiseMultiplier: c.double("sigma"))), orders: orders)
        for (k, a) in orders.enumerated() {
            // Near α = 1 with small q, log A is ~1e-7 and both implementations lose digits to
            // log-space cancellation (Opacus is 5e-9 off the 50-digit value there, we are 1.5e-9 off).
            #expect(close(ours[k], opacus.doubles("rdp")[k], rel: 1e-8, abs: 1e-15), "order \(a): \(ours[k]) vs \(opacus.doubles("rdp")[k])")
            #expect(ours[k] <= bound.doubles("rdp")[k] * (1 + 1e-9), "order \(a) above dp-accounting's upper bound")
        }
        if let mp = c.result("own_mpmath") {
            for (a, r) in zip(mp.doubles("orders"), mp.doubles("rdp")) {
                let mine = SubsampledGaussianRDP.rdp(q: c.double("q"), sigma: c.double("sigma"), alpha: a)
                #expect(close(mine, r, rel: 3e-9, abs: 1e-15), "mpmath order \(a): \(mine) vs \(r)")
            }
        }
    }

    @Test("heterogeneous histories compose: ε of several silos' runs", arguments: ReferenceCases.family("c_heterogeneous"))
    func heterogeneousComposition(_ c: ReferenceCases.Case) throws {
        let expected = try #require(c.result("opacus+dp_accounting"))
        let history = c.parameters["history"] as! [[String: NSNumber]]
        var accountant = RDPAccountant()
        try accountant.compose(.composed(history.map {
            .dpsgd(samplingProbability: $0["q"]!.doubleValue, noiseMultiplier: $0["sigma"]!.doubleValue, steps: $0["steps"]!.intValue)
        }))
        let eps = try accountant.epsilon(delta: c.double("delta"))
        #expect(close(eps, expected["epsilon"]!, rel: 1e-9, abs: 1e-13), "\(c.id): \(eps) vs \(expected["epsilon"]!)")
    }

    @Test("δ for a given ε matches dp-accounting where its optimal order is exact")
    func deltaForEpsilon() throws {
        // dp-accounting's δ is computed from its fractional-order upper bound; ours from exact RDP, so
        // ours is never larger, and equal at integer optimal orders.
        for c in ReferenceCases.family("c_heterogeneous_delta") {
            let expected = try #require(c.result("dp_accounting", methodContains: "Rdp"))
            let history = c.parameters["history"] as! [[String: NSNumber]]
            var accountant = RDPAccountant()
            try accountant.compose(.composed(history.map {
                .dpsgd(samplingProbability: $0["q"]!.doubleValue, noiseMultiplier: $0["sigma"]!.doubleValue, steps: $0["steps"]!.intValue)
            }))
            let (delta, order) = try accountant.deltaAndOrder(epsilon: c.double("epsilon"))
            #expect(delta <= expected["delta"]! * (1 + 1e-9), "\(c.id)")
            if order == order.rounded() && expected["optimal_order"]! == order {
                #expect(close(delta, expected["delta"]!, rel: 1e-9), "\(c.id)")
            }
            #expect(delta > 0 && delta < 1)
        }
    }

    @Test("the Gaussian mechanism without sampling equals its closed form α/2σ²")
    func gaussianClosedForm() throws {
        for c in ReferenceCases.family("e_gaussian_calibration") {
            let expected = try #require(c.result("opacus", methodContains: "analytic"))
            var accountant = RDPAccountant()
            try accountant.compose(.gaussian(noiseMultiplier: expected["sigma"]!))
            let eps = try accountant.epsilon(delta: c.double("delta"))
            #expect(close(eps, expected["epsilon"]!, rel: 1e-9), "\(c.id)")
        }
    }

    @Test("more steps never cost less privacy, and more noise never costs more")
    func monotone() throws {
        var last = 0.0
        for steps in [1, 10, 100, 1000, 10_000] {
            let e = try epsilon(of: .dpsgd(samplingProbability: 0.01, noiseMultiplier: 1.1, steps: steps), delta: 1e-5)
            #expect(e >= last)
            last = e
        }
        var prev = Double.infinity
        for sigma in [0.5, 0.8, 1.0, 2.0, 5.0] {
            let e = try epsilon(of: .dpsgd(samplingProbability: 0.01, noiseMultiplier: sigma, steps: 1000), delta: 1e-5)
            #expect(e <= prev)
            prev = e
        }
    }

    @Test("bad parameters are refused with the field named, never a NaN")
    func badInput() throws {
        let bad: [(DPEvent, String)] = [
            (.dpsgd(samplingProbability: 1.5, noiseMultiplier: 1, steps: 10), "sampling_probability"),
            (.dpsgd(samplingProbability: 0, noiseMultiplier: 1, steps: 10), "sampling_probability"),
            (.dpsgd(samplingProbability: .nan, noiseMultiplier: 1, steps: 10), "sampling_probability"),
            (.dpsgd(samplingProbability: 0.1, noiseMultiplier: 0, steps: 10), "noise_multiplier"),
            (.dpsgd(samplingProbability: 0.1, noiseMultiplier: -1, steps: 10), "noise_multiplier"),
            (.dpsgd(samplingProbability: 0.1, noiseMultiplier: .nan, steps: 10), "noise_multiplier"),
            (.dpsgd(samplingProbability: 0.1, noiseMultiplier: 1, steps: -1), "count"),
        ]
        for (event, field) in bad {
            var accountant = RDPAccountant()
            let error = #expect(throws: PrivacyError.self) { try accountant.compose(event) }
            #expect(error?.field.hasSuffix(field) == true, "\(String(describing: error))")
        }
        let accountant = RDPAccountant()
        for delta in [0, 1, -0.1, 1.5, Double.nan] {
            #expect(throws: PrivacyError.self) { try accountant.epsilon(delta: delta) }
        }
        #expect(throws: PrivacyError.self) { try accountant.delta(epsilon: -1) }
        #expect(throws: PrivacyError.self) { try accountant.delta(epsilon: .nan) }
    }

    @Test("nothing spent costs nothing")
    func noSpend() throws {
        #expect(try epsilon(of: .noOp, delta: 1e-5) == 0)
        #expect(try epsilon(of: .dpsgd(samplingProbability: 0.1, noiseMultiplier: 1, steps: 0), delta: 1e-5) == 0)
    }
}
