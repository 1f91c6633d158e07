import Foundation
import Testing
import FedGateTestSupport
@_spi(Testing) @testable import FedGatePrivacy

@Suite("Exact discrete Gaussian sampler")
struct DiscreteGaussianTests {
    static func exactPmf(sigma2: Double, range: ClosedRange<Int>) -> [Int: Double] {
        let z = (-2000...2000).reduce(0.0) { $0 + exp(-Double($1 * $1) / (2 * sigma2)) }
        return Dictionary(uniqueKeysWithValues: range.map { ($0, exp(-Double($0 * $0) / (2 * sigma2)) / z) })
    }

    @Test("the empirical pmf matches the exact pmf of N_Z(0, σ²)", arguments: [0.5, 1.5, 3.0, 20.0])
    func pmf(_ sigma: Double) async throws {
        try await onCPULane {
            let sampler = try DiscreteGaussianSampler(sigma: sigma)
            var rng = ChaCha20Random(stream: ChaCha20Keystream(key: Array(repeating: 0x5eed, count: 8), nonce: (UInt32(sigma * 10), 0)))
            let n = 200_000
            let draws = sampler.sample(n, using: &rng)
            var counts: [Int64: Int] = [:]
            for d in draws { counts[d, default: 0] += 1 }
            let reach = Int((4 * sigma).rounded(.up))
            let pmf = Self.exactPmf(sigma2: sampler.sigma * sampler.sigma, range: -reach...reach)
            // Each cell within 5 standard errors, and a χ² over the central cells.
            var chi2 = 0.0
            for (k, p) in pmf {
                let expected = p * Double(n)
                let observed = Double(counts[Int64(k)] ?? 0)
                #expect(abs(observed - expected) <= 5 * (expected * (1 - p)).squareRoot() + 2, "k = \(k): \(observed) vs \(expected)")
                if expected >= 20 { chi2 += (observed - expected) * (observed - expected) / expected }
            }
            let cells = Double(pmf.values.filter { $0 * Double(n) >= 20 }.count)
            // χ² with `cells` degrees of freedom: mean cells, sd sqrt(2·cells); allow 6 sd.
            #expect(chi2 < cells + 6 * (2 * cells).squareRoot(), "χ² = \(chi2) over \(cells) cells")
            let mean = Double(draws.reduce(0, +)) / Double(n)
            #expect(abs(mean) < 5 * sigma / Double(n).squareRoot())
        }
    }

    @Test("σ² is held exactly as a ratio of integers")
    func exactParameter() throws {
        let s = try DiscreteGaussianSampler(sigma: 1.5)
        #expect(Double(s.sigmaSquaredNumerator) / Double(s.sigmaSquaredDenominator) == 2.25)
        #expect(s.t == 2)
        let r = try DiscreteGaussianSampler(sigmaSquaredNumerator: 9, denominator: 1)
        #expect(r.t == 4)
    }

    @Test("the Bernoulli(exp(−γ)) building block has the right frequency")
    func bernoulli() async {
        await onCPULane {
            var rng = ChaCha20Random(stream: ChaCha20Keystream(key: Array(repeating: 1, count: 8), nonce: (9, 9)))
            for (num, den) in [(UInt128(1), UInt128(1)), (3, 2), (1, 10), (7, 3)] {
                let n = 100_000
                var hits = 0
                for _ in 0..<n where DiscreteGaussianSampler.bernoulliExpMinus(numerator: num, denominator: den, using: &rng) { hits += 1 }
                let p = exp(-Double(num) / Double(den))
                #expect(abs(Double(hits) / Double(n) - p) < 5 * (p * (1 - p) / Double(n)).squareRoot(), "γ = \(num)/\(den)")
            }
        }
    }

    @Test("parameters beyond exact 128-bit arithmetic, or not positive, are refused")
    func badParameters() {
        #expect(throws: PrivacyError.self) { try DiscreteGaussianSampler(sigma: 0) }
        #expect(throws: PrivacyError.self) { try DiscreteGaussianSampler(sigma: .infinity) }
        #expect(throws: PrivacyError.self) { try DiscreteGaussianSampler(sigmaSquaredNumerator: 1 << 62, denominator: 1 << 20) }
    }
}
