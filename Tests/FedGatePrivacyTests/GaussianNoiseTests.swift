import Foundation
import Testing
import Crypto
import CryptoExtras
import FedGateTensors
import FedGateTestSupport
@_spi(Testing) @testable import FedGatePrivacy

@Suite("Gaussian noise from a ChaCha20 keystream")
struct GaussianNoiseTests {

    static func fixedStream(_ seed: UInt32 = 1) -> ChaCha20Keystream {
        ChaCha20Keystream(key: (0..<8).map { UInt32($0) &* 0x9E37_79B9 &+ seed }, nonce: (seed, ~seed))
    }

    @Test("our SIMD ChaCha20 produces swift-crypto's ChaCha20 keystream (RFC 8439)")
    func chachaMatchesSwiftCrypto() throws {
        // RFC 8439 §2.3.2 key 00 01 … 1f and nonce 00 00 00 09 00 00 00 4a 00 00 00 00.
        let keyBytes = (0..<32).map { UInt8($0) }
        let words = (0..<8).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(keyBytes[4 * i + $1]) << (8 * $1) } }
        var ours = ChaCha20Keystream(key: words, nonce: (0x4a00_0000, 0), counter: 1 | (UInt64(0x0900_0000) << 32))
        let mine = ours.bytes(4096)
        let nonce = try Insecure.ChaCha20CTR.Nonce(data: [0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0])
        let counter = try Insecure.ChaCha20CTR.Counter(offset: 1)
        let theirs = try Insecure.ChaCha20CTR.encrypt(Data(count: 4096), using: SymmetricKey(data: keyBytes), counter: counter, nonce: nonce)
        #expect(mine == Array(theirs))
        // The RFC's own first bytes of block 1.
        #expect(Array(mine.prefix(8)) == [0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15])
    }

    @Test("the block counter carries into its high word across a 2^32 boundary")
    func counterCarry() {
        var a = ChaCha20Keystream(key: Array(repeating: 7, count: 8), nonce: (1, 2), counter: 0xFFFF_FFFC)
        let blocks = a.nextBlocks()
        var b = ChaCha20Keystream(key: Array(repeating: 7, count: 8), nonce: (1, 2), counter: 0x1_0000_0000)
        let after = b.nextBlocks()
        // Lane 4 of the first batch is block 2^32, which is lane 0 of the second.
        for w in 0..<16 { #expect(blocks[w][4] == after[w][0]) }
    }

    @Test("generators seeded by the OS never share a keystream")
    func freshKeys() {
        var a = GaussianNoiseGenerator(), b = GaussianNoiseGenerator()
        #expect(a.normals(256) != b.normals(256))
    }

    @Test("vector log is within 2e-7 + 1.2e-7·|log x| of libm on (0, 1] (about one Float ulp)")
    func logAccuracy() {
        var worst: Double = 0
        var u: Float = 1
        while u > 1e-9 {
            let v = SIMD8<Float>((0..<8).map { u * (1 - Float($0) * 1e-3) })
            let l = VectorTranscendentals.log(v)
            for k in 0..<8 {
                let exact = Foundation.log(Double(v[k]))
                worst = max(worst, abs(Double(l[k]) - exact) / (2e-7 + 1.2e-7 * abs(exact)))
            }
            u *= 0.9993
        }
        #expect(worst <= 1, "worst error \(worst) of the allowance")
    }

    @Test("vector square root is within 3e-7 relative of libm, and √0 = 0")
    func sqrtAccuracy() {
        var worst: Double = 0
        var x: Float = 1e-6
        while x < 100 {
            let r = VectorTranscendentals.sqrt(SIMD8<Float>(repeating: x))
            worst = max(worst, abs(Double(r[0]) - Double(x).squareRoot()) / Double(x).squareRoot())
            x *= 1.0001
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        #expect(VectorTranscendentals.sqrt(.zero) == .zero)
    }

    @Test("vector sin/cos are within 5e-7 of libm around the circle")
    func sinCosAccuracy() {
        var worst: Double = 0
        for i in 0..<200_000 {
            let u = Float(i) / 200_000
            let (s, c) = VectorTranscendentals.sinCosTwoPi(SIMD8<Float>(repeating: u))
            let angle = 2 * Double.pi * (Double(u) - 0.5)
            worst = max(worst, abs(Double(s[0]) - sin(angle)), abs(Double(c[0]) - cos(angle)))
        }
        #expect(worst < 5e-7, "worst absolute error \(worst)")
    }

    @Test("a million normals pass mean, variance, Kolmogorov–Smirnov, 3σ/4σ tails and independence")
    func millionNormals() async {
        await onCPULane {
            var noise = GaussianNoiseGenerator(stream: Self.fixedStream())
            let fit = NormalFit(noise.normals(1_000_000))
            #expect(fit.meanOK, "mean \(fit.mean)")
            #expect(fit.varianceOK, "variance \(fit.variance)")
            #expect(fit.ksOK, "KS D = \(fit.ks)")
            #expect(fit.tailsOK, "beyond 3σ: \(fit.beyond3), beyond 4σ: \(fit.beyond4)")
            #expect(fit.independenceOK, "lag-1 \(fit.lag1), lag-8 \(fit.lag8), squares lag-8 \(fit.squaresLag8)")
        }
    }

    @Test("the same checks reject noise that is 10 % too wide or slightly off-centre")
    func checksHavePower() async {
        await onCPULane {
            var noise = GaussianNoiseGenerator(stream: Self.fixedStream(2))
            let z = noise.normals(1_000_000)
            let wide = NormalFit(z.map { $0 * 1.1 })
            #expect(!wide.varianceOK && !wide.ksOK && !wide.tailsOK)
            let shifted = NormalFit(z.map { $0 + 0.02 })
            #expect(!shifted.meanOK)
            let repeated = NormalFit(Array(z.prefix(500_000)).flatMap { [$0, $0] })
            #expect(!repeated.independenceOK)
        }
    }

    @Test("an update above the bound is clipped to exactly C before noise, one below is untouched")
    func clipping() throws {
        var noise = GaussianNoiseGenerator(stream: Self.fixedStream(3))
        let noiseless = try GaussianMechanism(clipNorm: 1, noiseMultiplier: 0)
        var big: [Float] = Array(repeating: 3, count: 1000)
        let outcome = try noiseless.apply(to: &big, noise: &noise)
        #expect(outcome.wasClipped)
        #expect(abs(VectorMath.l2Norm(big) - 1) < 1e-6)
        var small: [Float] = Array(repeating: 0.001, count: 10)
        let before = small
        #expect(try !noiseless.apply(to: &small, noise: &noise).wasClipped)
        #expect(small == before)
    }

    @Test("noise has standard deviation σ·C on every coordinate, including the tail after the last full batch")
    func noiseScale() throws {
        var noise = GaussianNoiseGenerator(stream: Self.fixedStream(4))
        let mechanism = try GaussianMechanism(clipNorm: 0.5, noiseMultiplier: 2)
        var zeros = [Float](repeating: 0, count: 200_037)
        try mechanism.apply(to: &zeros, noise: &noise)
        let fit = NormalFit(zeros.map { $0 / 1.0 })
        #expect(fit.varianceOK, "variance \(fit.variance), expected (σC)² = 1")
        #expect(fit.meanOK)
        #expect(zeros.suffix(37).allSatisfy { $0 != 0 })
    }

    @Test("named tensors are clipped as one vector")
    func tensorSetClipping() throws {
        var noise = GaussianNoiseGenerator(stream: Self.fixedStream(5))
        var update = try TensorSet([
            Tensor(name: "w", shape: [2], values: [3, 0]),
            Tensor(name: "b", shape: [1], values: [4]),
        ])
        let outcome = try GaussianMechanism(clipNorm: 1, noiseMultiplier: 0).apply(to: &update, noise: &noise)
        #expect(outcome.normBefore == 5)
        #expect(abs(update.l2Norm - 1) < 1e-6)
        #expect(abs(update.tensors[1].values[0] - 0.8) < 1e-6)
    }

    @Test("an update holding NaN or infinity is refused, not released")
    func nonFinite() throws {
        var noise = GaussianNoiseGenerator()
        let mechanism = try GaussianMechanism(clipNorm: 1, noiseMultiplier: 1)
        var bad: [Float] = [1, .nan, 2]
        #expect(throws: PrivacyError.self) { try mechanism.apply(to: &bad, noise: &noise) }
        #expect(throws: PrivacyError.self) { try GaussianMechanism(clipNorm: 0, noiseMultiplier: 1) }
        #expect(throws: PrivacyError.self) { try GaussianMechanism(clipNorm: 1, noiseMultiplier: -1) }
    }
}
