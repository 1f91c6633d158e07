import Foundation
import Testing
import FedGateTestSupport
@_spi(Testing) import FedGatePrivacy
@testable import FedGateSecureAggregation

@Suite("Fixed-point encoding and distributed DP")
struct DistributedNoiseTests {
    @Test("stochastic rounding is unbiased and the sum decodes within n/scale of the float sum")
    func roundTrip() throws {
        let codec = try FixedPointCodec(clipNorm: 1, silos: 4)
        var rng = ChaCha20Random(stream: ChaCha20Keystream(key: Array(repeating: 3, count: 8), nonce: (1, 1)))
        let updates: [[Float]] = (0..<4).map { s in (0..<100).map { Float(sin(Double($0 * (s + 1)))) * 0.05 } }
        var sum = [UInt32](repeating: 0, count: 100)
        for u in updates { for (i, v) in try codec.encode(u, using: &rng).enumerated() { sum[i] &+= v } }
        let decoded = codec.decode(sum)
        for i in 0..<100 {
            let exact = updates.reduce(Float(0)) { $0 + $1[i] }
            #expect(abs(decoded[i] - exact) <= Float(4 / codec.scale) + 1e-6)
        }
        // Unbiased: the average of many encodings of 0.3 units is 0.3 units.
        let x = Float(0.3 / codec.scale)
        var total = 0.0
        for _ in 0..<20_000 { total += Double(Int32(bitPattern: try codec.encode([x], using: &rng)[0])) }
        #expect(abs(total / 20_000 - 0.3) < 0.02)
    }

    @Test("the worst case — every silo at +C in one coordinate — does not wrap")
    func noWrap() throws {
        let codec = try FixedPointCodec(clipNorm: 2, silos: 50)
        var rng = ChaCha20Random()
        var sum: UInt32 = 0
        for _ in 0..<50 { sum &+= try codec.encode([2], using: &rng)[0] }
        #expect(abs(codec.decode([sum])[0] - 100) < 1e-3)
        var negative: UInt32 = 0
        for _ in 0..<50 { negative &+= try codec.encode([-2], using: &rng)[0] }
        #expect(abs(codec.decode([negative])[0] + 100) < 1e-3)
    }

    @Test("an update holding NaN is refused")
    func nonFinite() throws {
        var rng = ChaCha20Random()
        #expect(throws: SecureAggregationError.self) { try FixedPointCodec(clipNorm: 1, silos: 2).encode([.nan], using: &rng) }
    }

    @Test("a noised secure round sums to the true sum plus noise of the promised size, and its ε is finite")
    func noisedRound() async throws {
        try await onCPULane {
            // 10 000 coordinates: the variance estimate's standard deviation is √(2/d) ≈ 0.014, so the
            // bound below is five of them (with 2 000 coordinates and 0.1 it was three, and it failed once).
            let n = 5, d = 10_000
            let noise = try DistributedNoise(clipNorm: 1, silos: n, honestSilos: n, noiseMultiplier: 1.0)
            let ids = silos(n)
            let config = try SecureAggregationConfiguration(round: 3, participants: ids, threshold: 3, dimension: d)
            var rng = ChaCha20Random()
            let updates: [SiloID: [Float]] = Dictionary(uniqueKeysWithValues: ids.map { id in (id, (0..<d).map { _ in Float.random(in: -0.01...0.01) }) })
            var encoded: [SiloID: [UInt32]] = [:]
            for (id, u) in updates {
                var e = try noise.codec.encode(u, using: &rng)
                noise.addNoise(to: &e, using: &rng)
                encoded[id] = e
            }
            let report = try InMemoryRound(configuration: config).run(encoded: encoded)
            let decoded = noise.codec.decode(report.sum)
            var residual = [Double]()
            for i in 0..<d { residual.append(Double(decoded[i]) - Double(ids.reduce(Float(0)) { $0 + updates[$1]![i] })) }
            let variance = residual.reduce(0) { $0 + $1 * $1 } / Double(d)
            // The honest noise in the sum has standard deviation z·C = 1.
            #expect(abs(variance - 1) < 0.07, "noise variance \(variance)")
            let eps = try epsilon(of: noise.event(dimension: d), delta: 1e-5)
            #expect(eps.isFinite && eps > 0 && eps < 10)
        }
    }

    @Test("the distributed bound with one silo is the single discrete Gaussian's, and more honest silos cost less")
    func accounting() throws {
        let single = DistributedDiscreteGaussianBound.rho(localSigma: 10, silos: 1, dimension: 1000, l2Sensitivity: 5)
        #expect(abs(single - 25.0 / 200) < 1e-12)
        let few = try epsilon(of: .distributedDiscreteGaussian(localSigma: 10, silos: 3, dimension: 1000, l2Sensitivity: 30), delta: 1e-5)
        let many = try epsilon(of: .distributedDiscreteGaussian(localSigma: 10, silos: 30, dimension: 1000, l2Sensitivity: 30), delta: 1e-5)
        #expect(many < few)
        let json = try DPEvent.distributedDiscreteGaussian(localSigma: 10, silos: 3, dimension: 1000, l2Sensitivity: 30).canonicalJSON()
        #expect(try DPEvent.fromJSON(json) == .distributedDiscreteGaussian(localSigma: 10, silos: 3, dimension: 1000, l2Sensitivity: 30))
        #expect(throws: PrivacyError.self) { try epsilon(of: .distributedDiscreteGaussian(localSigma: 0.1, silos: 3, dimension: 10, l2Sensitivity: 1), delta: 1e-5) }
        #expect(throws: PrivacyError.self) { try epsilon(of: .distributedDiscreteGaussian(localSigma: 10, silos: 3, dimension: 10, l2Sensitivity: 1), delta: 1e-5, accountant: .pld) }
    }
}
