/// Standard normal noise from a ChaCha20 keystream, eight lanes at a time by Box–Muller:
/// each 512-byte keystream batch (eight ChaCha blocks, still in registers) gives 128 normals.
///
/// u₁ uses 31 keystream bits (so |z| ≤ 6.66, a tail of mass 2.7e-11 cut off), the angle 24 bits.
/// The generator is seeded from the OS CSPRNG; it never repeats keystream and is not `Codable`,
/// so no seed can come from a configuration file.
public struct GaussianNoiseGenerator: Sendable {
    private var stream: ChaCha20Keystream
    /// The current keystream batch, reused so the hot loop never allocates or copies.
    private var words = ChaCha20Keystream.Blocks(repeating: .zero)
    /// Box–Muller radii of the current batch, computed for all pairs first so the eight
    /// independent log/sqrt chains overlap instead of waiting on each other's latency.
    private var radii = InlineArray<8, V>(repeating: .zero)
    /// The batch's 128 normals, as 16 vectors.
    private var batch = InlineArray<16, V>(repeating: .zero)

    /// A generator keyed from the operating system's CSPRNG.
    public init() { stream = ChaCha20Keystream() }

    /// A generator over a given keystream: tests only.
    @_spi(Testing)
    public init(stream: ChaCha20Keystream) { self.stream = stream }

    public typealias V = SIMD8<Float>

    /// Refills the keystream batch (8 pairs of word vectors) and turns it into 128 normals: first
    /// the eight radii √(−2 ln u₁), then the eight angles, each phase eight independent chains.
    @inline(__always)
    private mutating func refill() {
        stream.nextBlocks(into: &words)
        for p in 0..<8 {
            // Signed conversion: AVX2 has no unsigned int→float instruction.
            let a = SIMD8<Int32>(truncatingIfNeeded: words[p] &>> 1)
            let u1 = (V(a) + 0.5) * V(repeating: 1.0 / 2_147_483_648.0)   // (0, 1]
            radii[p] = VectorTranscendentals.sqrt(V(repeating: -2) * VectorTranscendentals.log(u1))
        }
        for p in 0..<8 {
            let b = SIMD8<Int32>(truncatingIfNeeded: words[p + 8] &>> 8)
            let u2 = V(b) * V(repeating: 1.0 / 16_777_216.0)           // [0, 1)
            let (s, c) = VectorTranscendentals.sinCosTwoPi(u2)
            batch[2 * p] = radii[p] * c
            batch[2 * p + 1] = radii[p] * s
        }
    }

    /// Fills the buffer with independent N(0, 1) values.
    public mutating func fill(_ out: UnsafeMutableBufferPointer<Float>) {
        guard let base = out.baseAddress else { return }
        let raw = UnsafeMutableRawPointer(base)
        let stride = MemoryLayout<V>.stride
        var i = 0
        while i + 128 <= out.count {
            refill()
            let start = raw + i * MemoryLayout<Float>.stride
            for k in 0..<16 { start.storeBytes(of: batch[k], toByteOffset: k * stride, as: V.self) }
            i += 128
        }
        if i < out.count {
            // The tail takes a fresh batch and uses its prefix; the rest is discarded, never reused.
            refill()
            for t in 0..<(out.count - i) { out[i + t] = batch[t / 8][t % 8] }
        }
    }

    /// xᵢ ← a·xᵢ + b·zᵢ with zᵢ ~ N(0, 1): the fused scale-and-noise pass of the Gaussian mechanism.
    public mutating func scaleAndAddNoise(_ x: UnsafeMutableBufferPointer<Float>, scale a: Float, noiseStandardDeviation b: Float) {
        guard let base = x.baseAddress else { return }
        let raw = UnsafeMutableRawPointer(base)
        let stride = MemoryLayout<V>.stride
        let av = V(repeating: a), bv = V(repeating: b)
        var i = 0
        while i + 128 <= x.count {
            refill()
            let start = raw + i * MemoryLayout<Float>.stride
            for k in 0..<16 {
                let v = start.loadUnaligned(fromByteOffset: k * stride, as: V.self)
                start.storeBytes(of: VectorTranscendentals.fma(v, av, batch[k] * bv), toByteOffset: k * stride, as: V.self)
            }
            i += 128
        }
        if i < x.count {
            refill()
            for t in 0..<(x.count - i) { x[i + t] = x[i + t] * a + batch[t / 8][t % 8] * b }
        }
    }
}

extension GaussianNoiseGenerator {
    /// An array of `count` independent N(0, 1) values.
    public mutating func normals(_ count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { fill($0) }
        return out
    }
}
