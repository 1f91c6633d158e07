import Foundation
import Testing
import FedGateTestSupport
@testable import FedGatePrivacy

@Suite("Noise calibration")
struct CalibrationTests {
    @Test("the noise multiplier for a target ε matches dp-accounting's calibration and meets the target",
          arguments: ReferenceCases.family("d_calibrate_sigma"))
    func rdpCalibration(_ c: ReferenceCases.Case) throws {
        let expected = try #require(c.result("dp_accounting", methodContains: "RdpAccountant"))["sigma"]!
        let sigma = try NoiseCalibration.noiseMultiplier(
            targetEpsilon: c.double("target_epsilon"), delta: c.double("delta"),
            samplingProbability: c.double("q"), steps: c.int("steps"), accountant: .rdp)
        #expect(abs(sigma - expected) <= 2e-6, "\(c.id): σ \(sigma) vs \(expected)")
        let eps = try epsilon(of: .dpsgd(samplingProbability: c.double("q"), noiseMultiplier: sigma, steps: c.int("steps")), delta: c.double("delta"))
        #expect(eps <= c.double("target_epsilon"))
    }

    @Test("PLD calibration needs less noise than RDP and meets the target")
    func pldCalibration() async throws {
        try await onCPULane {
            let c = try #require(ReferenceCases.family("d_calibrate_sigma").first { $0.double("target_epsilon") == 2.0 })
            let expected = try #require(c.result("dp_accounting", methodContains: "PLDAccountant"))["sigma"]!
            let sigma = try NoiseCalibration.noiseMultiplier(
                targetEpsilon: 2.0, delta: c.double("delta"), samplingProbability: c.double("q"),
                steps: c.int("steps"), accountant: .pld, tolerance: 1e-4)
            #expect(abs(sigma - expected) <= 1e-3, "σ \(sigma) vs dp-accounting \(expected)")
        }
    }

    @Test("the analytic Gaussian σ matches Balle & Wang and dp-accounting", arguments: ReferenceCases.family("e_gaussian_calibration"))
    func analyticGaussian(_ c: ReferenceCases.Case) throws {
        let expected = try #require(c.result("own_scipy", methodContains: "Balle"))["sigma"]!
        let sigma = try AnalyticGaussian.sigma(epsilon: c.double("epsilon"), delta: c.double("delta"), sensitivity: c.double("sensitivity"))
        #expect(close(sigma, expected, rel: 1e-10), "\(c.id): \(sigma) vs \(expected)")
        let back = try AnalyticGaussian.epsilon(sigma: sigma, delta: c.double("delta"))
        #expect(close(back, c.double("epsilon"), rel: 1e-9))
        // The classical Dwork–Roth σ is valid but loose: its exact ε is what the reference says.
        let classical = try #require(c.result("own_scipy", methodContains: "Dwork"))
        let exact = try AnalyticGaussian.epsilon(sigma: classical["sigma"]!, delta: c.double("delta"))
        #expect(close(exact, classical["exact_epsilon_at_sigma"]!, rel: 1e-9))
    }

    @Test("unreachable or malformed targets are refused with the field named")
    func badInput() throws {
        #expect(throws: PrivacyError.self) {
            try NoiseCalibration.noiseMultiplier(targetEpsilon: 0, delta: 1e-5, samplingProbability: 0.01, steps: 100)
        }
        #expect(throws: PrivacyError.self) {
            try NoiseCalibration.noiseMultiplier(targetEpsilon: 1, delta: 2, samplingProbability: 0.01, steps: 100)
        }
        #expect(throws: PrivacyError.self) {
            try NoiseCalibration.noiseMultiplier(targetEpsilon: 1, delta: 1e-5, samplingProbability: 0.01, steps: 0)
        }
        #expect(throws: PrivacyError.self) { try AnalyticGaussian.sigma(epsilon: .nan, delta: 1e-5) }
    }
}
