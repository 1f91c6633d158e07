import Foundation
import Testing
@_spi(Testing) @testable import FedGateLearning
import FedGatePrivacy

@Suite("Empirical privacy audit of DP-SGD in one run (white-box canaries)")
struct PrivacyAuditTests {
    @Test("the lower bound matches SciPy's binomial tail: what 300, 400 of 400 and 420 of 600 right guesses refute at 95 %; chance refutes nothing")
    func bound() {
        // brentq(lambda e: binom.sf(v - 1, r, 1 / (1 + exp(-e))) - 0.05, 1e-9, 50), SciPy 1.x.
        for (r, v, reference) in [(400, 300, 0.9042452374280038), (400, 400, 4.890528844315754), (600, 420, 0.6978208613486239)] {
            let ours = PrivacyAudit.epsilonLowerBound(guesses: r, correct: v, confidence: 0.95)
            #expect(abs(ours - reference) < 1e-6, "\(v) of \(r): \(ours) vs \(reference)")
        }
        #expect(PrivacyAudit.epsilonLowerBound(guesses: 400, correct: 200, confidence: 0.95) == 0)
        #expect(PrivacyAudit.epsilonLowerBound(guesses: 400, correct: 215, confidence: 0.95) == 0, "within chance")
        #expect(PrivacyAudit.epsilonLowerBound(guesses: 400, correct: 0, confidence: 0.95) == 0)
    }

    /// DP-SGD on breast cancer (logistic, q = 0.05, 200 steps, δ = 1e-5) at the noise the accountant
    /// says gives `epsilon`, audited with 1000 canaries and 600 guesses.
    static func audit(epsilon: Double, fault: AuditFault? = nil, seed: UInt64) throws -> (PrivacyAudit.Result, claimed: Double) {
        let (q, steps, delta) = (0.05, 200, 1e-5)
        let sigma = try NoiseCalibration.noiseMultiplier(targetEpsilon: epsilon, delta: delta, samplingProbability: q, steps: steps)
        var training = LocalTrainingSettings()
        training.learningRate = 0.5
        training.dp = try DPSGDSettings(noiseMultiplier: sigma, clipNorm: 1, samplingRate: q)
        training.dpSteps = steps
        training.auditFault = fault
        var settings = PrivacyAudit.Settings()
        (settings.canaries, settings.guesses, settings.seed) = (1000, 600, seed)
        let result = try PrivacyAudit(settings: settings).run(kind: .logistic, data: ExampleData.breastCancer, training: training)
        let claimed = try FedGatePrivacy.epsilon(of: .dpsgd(samplingProbability: q, noiseMultiplier: sigma, steps: steps), delta: delta)
        return (result, claimed)
    }

    @Test("at claimed ε 1, 4 and 8 the empirical lower bound stays below the claim in every run (two seeds each)")
    func belowTheClaim() throws {
        for epsilon in [1.0, 4, 8] {
            for seed: UInt64 in [1, 2] {
                let (result, claimed) = try Self.audit(epsilon: epsilon, seed: seed)
                print(String(format: "privacy audit: claimed ε %.2f, %d of %d guesses right, empirical ε ≥ %.3f at 95 %%", claimed, result.correct, result.guesses, result.empiricalEpsilon))
                #expect(result.empiricalEpsilon < claimed, "claimed \(claimed), empirical \(result.empiricalEpsilon)")
                #expect(abs(Double(result.included) - 500) < 80, "about half the canaries go in: \(result.included)")
            }
        }
    }

    @Test("with the noise switched off, or clipping disabled, the audit reports an empirical ε above the claimed 4")
    func catchesBrokenMechanisms() throws {
        for fault in [AuditFault.noNoise, .noClipping] {
            let (result, claimed) = try Self.audit(epsilon: 4, fault: fault, seed: 3)
            print(String(format: "privacy audit, %@: claimed ε %.2f, %d of %d right, empirical ε ≥ %.3f", "\(fault)", claimed, result.correct, result.guesses, result.empiricalEpsilon))
            #expect(result.empiricalEpsilon > claimed, "\(fault): claimed \(claimed), empirical \(result.empiricalEpsilon)")
        }
    }
}
