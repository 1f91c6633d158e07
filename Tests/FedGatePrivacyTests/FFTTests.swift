import Testing
@testable import FedGatePrivacy

@Suite("FFT convolutions behind the PLD accountant")
struct FFTTests {
    static func sequence(_ n: Int, seed: UInt64) -> [Double] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Double(s >> 11) / Double(1 << 53)
        }
    }

    static func direct(_ a: [Double], _ b: [Double]) -> [Double] {
        var out = Array(repeating: 0.0, count: a.count + b.count - 1)
        for (i, x) in a.enumerated() { for (j, y) in b.enumerated() { out[i + j] += x * y } }
        return out
    }

    @Test("FFT convolution equals direct convolution, for even and odd numbers of radix-2 stages",
          arguments: [(100, 3000), (65, 70), (1000, 1500), (2049, 4000)])
    func convolution(_ sizes: (Int, Int)) {
        let a = Self.sequence(sizes.0, seed: 1), b = Self.sequence(sizes.1, seed: 2)
        let fast = FFT.convolve(a, b), slow = Self.direct(a, b)
        #expect(fast.count == slow.count)
        let worst = zip(fast, slow).map { abs($0 - $1) }.max() ?? 0
        #expect(worst < 1e-9 * Double(max(sizes.0, sizes.1)), "worst difference \(worst)")
    }

    @Test("raising the transform to a power equals repeated convolution")
    func selfConvolution() {
        let p = [0.2, 0.5, 0.3]
        var expected = p
        for _ in 1..<7 { expected = Self.direct(expected, p) }
        let fast = FFT.selfConvolve(p, times: 7, length: FFT.size(atLeast: expected.count))
        for (i, e) in expected.enumerated() { #expect(abs(fast[i] - e) < 1e-14, "index \(i)") }
    }
}
