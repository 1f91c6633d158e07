import Foundation
import Testing
@testable import FedGatePrivacy

@Suite("DP events")
struct DPEventTests {
    @Test("an event round-trips through its stable ledger JSON")
    func roundTrip() throws {
        let event = DPEvent.composed([
            .dpsgd(samplingProbability: 0.01, noiseMultiplier: 1.1, steps: 500),
            .laplace(noiseMultiplier: 2),
            .discreteGaussian(sigma: 3, sensitivity: 1),
            .noOp,
        ])
        let json = try event.canonicalJSON()
        #expect(try DPEvent.fromJSON(json) == event)
    }

    @Test("the JSON form is fixed: stored ledgers must keep decoding")
    func stableForm() throws {
        let json = try DPEvent.dpsgd(samplingProbability: 0.01, noiseMultiplier: 1.1, steps: 500).canonicalJSON()
        #expect(json == #"{"count":500,"event":{"event":{"noise_multiplier":1.1,"type":"gaussian"},"sampling_probability":0.01,"type":"poisson_sampled"},"type":"self_composed"}"#)
    }

    @Test("unknown event types and invalid parameters in JSON are refused")
    func badJSON() {
        #expect(throws: DecodingError.self) { try DPEvent.fromJSON(#"{"type":"magic"}"#) }
        #expect(throws: DecodingError.self) { try DPEvent.fromJSON(#"{"type":"gaussian"}"#) }
        #expect(throws: PrivacyError.self) { try DPEvent.fromJSON(#"{"type":"gaussian","noise_multiplier":-1}"#) }
    }

    @Test("nested self-compositions multiply their counts")
    func simplify() {
        let step = DPEvent.gaussian(noiseMultiplier: 1)
        #expect(DPEvent.selfComposed(event: .selfComposed(event: step, count: 3), count: 4).simplified == .selfComposed(event: step, count: 12))
        #expect(DPEvent.composed([.noOp, step]).simplified == step)
        // Rounds of the same DP-SGD run merge into one self-composition, as the ledger will show them.
        let round = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 10)
        #expect(DPEvent.composed(Array(repeating: round, count: 20)).simplified == .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 200))
        #expect(DPEvent.composed([step, step, .laplace(noiseMultiplier: 1)]).simplified == .composed([.selfComposed(event: step, count: 2), .laplace(noiseMultiplier: 1)]))
    }

    @Test("repeats merge wherever they stand (a ledger interleaves a plan's statistics release with its rounds), and ε is unchanged")
    func simplifyInterleaved() throws {
        let release = DPEvent.gaussian(noiseMultiplier: 2)
        let round = DPEvent.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 10)
        let ledger = DPEvent.composed([round, release] + Array(repeating: round, count: 9))
        #expect(ledger.simplified == .composed([.dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 100), release]))
        // Composition is commutative for the accountants: the same ε as the unmerged events, summed by hand.
        let merged = try epsilon(of: ledger, delta: 1e-5)
        let reference = try epsilon(of: .composed([release, .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 100)]), delta: 1e-5)
        #expect(abs(merged - reference) < 1e-12)
        let pld = try epsilon(of: ledger, delta: 1e-5, accountant: .pld)
        #expect(abs(pld - (try epsilon(of: .composed([release, .dpsgd(samplingProbability: 0.1, noiseMultiplier: 2, steps: 100)]), delta: 1e-5, accountant: .pld))) < 1e-9)
    }
}
