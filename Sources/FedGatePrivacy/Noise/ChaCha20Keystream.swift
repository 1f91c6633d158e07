/// ChaCha20 (Bernstein 2008; RFC 8439 block function) as a keystream generator, eight blocks at a
/// time in SIMD lanes: word w of blocks c … c+7 lives in lane k of `SIMD8<UInt32>` number w.
///
/// The state is the 256-bit key, a 64-bit block counter (words 12–13) and a 64-bit nonce
/// (words 14–15). With the counter's high word fixed, words 13–15 are exactly RFC 8439's 96-bit
/// nonce, which is how the tests check it against swift-crypto's ChaCha20.
public struct ChaCha20Keystream: Sendable {
    public typealias Word = SIMD8<UInt32>
    /// Eight blocks: `words[w][k]` is word w of block `counter + k`.
    public typealias Blocks = InlineArray<16, Word>

    private let key: InlineArray<8, UInt32>
    private let nonce: (UInt32, UInt32)
    /// The next block number.
    public private(set) var counter: UInt64

    /// A keystream under a fresh key and nonce from the operating system's CSPRNG (getrandom).
    public init() {
        var rng = SystemRandomNumberGenerator()
        key = InlineArray { _ in rng.next() }
        nonce = (rng.next(), rng.next())
        counter = 0
    }

    /// A keystream under a chosen key: for keys derived by a protocol (secure-aggregation masks,
    /// which both ends must expand identically) and for known-answer tests. The noise generators
    /// accept such a stream only through test-only initialisers, so noise is never seeded this way.
    public init(key: [UInt32], nonce: (UInt32, UInt32), counter: UInt64 = 0) {
        precondition(key.count == 8, "a ChaCha20 key is eight 32-bit words")
        self.key = InlineArray { key[$0] }
        self.nonce = nonce
        self.counter = counter
    }

    @inline(__always)
    private static func rotl(_ x: Word, _ n: UInt32) -> Word {
        (x &<< n) | (x &>> (32 - n))
    }

    @inline(__always)
    private static func quarterRound(_ a: inout Word, _ b: inout Word, _ c: inout Word, _ d: inout Word) {
        a &+= b; d ^= a; d = rotl(d, 16)
        c &+= d; b ^= c; b = rotl(b, 12)
        a &+= b; d ^= a; d = rotl(d, 8)
        c &+= d; b ^= c; b = rotl(b, 7)
    }

    /// The next eight blocks of keystream; the counter advances by eight.
    @inline(__always)
    public mutating func nextBlocks() -> Blocks {
        var out = Blocks(repeating: .zero)
        nextBlocks(into: &out)
        return out
    }

    /// Writes the next eight blocks into `out` (no allocation, no copy); the counter advances by eight.
    @inline(__always)
    public mutating func nextBlocks(into out: inout Blocks) {
        let lanes = Word(0, 1, 2, 3, 4, 5, 6, 7)
        let low = Word(repeating: UInt32(truncatingIfNeeded: counter)) &+ lanes
        // Carry into the high word for lanes whose low word wrapped.
        let wrapped = low .< Word(repeating: UInt32(truncatingIfNeeded: counter))
        let high = Word(repeating: UInt32(truncatingIfNeeded: counter >> 32))
            &+ Word(repeating: 0).replacing(with: 1, where: wrapped)
        precondition(counter <= UInt64.max - 8, "ChaCha20 keystream exhausted: make a new generator")
        counter &+= 8

        let s0 = Word(repeating: 0x6170_7865), s1 = Word(repeating: 0x3320_646e)
        let s2 = Word(repeating: 0x7962_2d32), s3 = Word(repeating: 0x6b20_6574)
        let k0 = Word(repeating: key[0]), k1 = Word(repeating: key[1]), k2 = Word(repeating: key[2]), k3 = Word(repeating: key[3])
        let k4 = Word(repeating: key[4]), k5 = Word(repeating: key[5]), k6 = Word(repeating: key[6]), k7 = Word(repeating: key[7])
        let n0 = Word(repeating: nonce.0), n1 = Word(repeating: nonce.1)

        var x0 = s0, x1 = s1, x2 = s2, x3 = s3
        var x4 = k0, x5 = k1, x6 = k2, x7 = k3
        var x8 = k4, x9 = k5, x10 = k6, x11 = k7
        var x12 = low, x13 = high, x14 = n0, x15 = n1
        for _ in 0..<10 {
            Self.quarterRound(&x0, &x4, &x8, &x12)
            Self.quarterRound(&x1, &x5, &x9, &x13)
            Self.quarterRound(&x2, &x6, &x10, &x14)
            Self.quarterRound(&x3, &x7, &x11, &x15)
            Self.quarterRound(&x0, &x5, &x10, &x15)
            Self.quarterRound(&x1, &x6, &x11, &x12)
            Self.quarterRound(&x2, &x7, &x8, &x13)
            Self.quarterRound(&x3, &x4, &x9, &x14)
        }
        out[0] = x0 &+ s0; out[1] = x1 &+ s1; out[2] = x2 &+ s2; out[3] = x3 &+ s3
        out[4] = x4 &+ k0; out[5] = x5 &+ k1; out[6] = x6 &+ k2; out[7] = x7 &+ k3
        out[8] = x8 &+ k4; out[9] = x9 &+ k5; out[10] = x10 &+ k6; out[11] = x11 &+ k7
        out[12] = x12 &+ low; out[13] = x13 &+ high; out[14] = x14 &+ n0; out[15] = x15 &+ n1
    }

    /// The keystream in standard byte order (block after block, little-endian words).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count + 512)
        while out.count < count {
            let blocks = nextBlocks()
            for lane in 0..<8 {
                for w in 0..<16 {
                    let v = blocks[w][lane]
                    out.append(UInt8(truncatingIfNeeded: v)); out.append(UInt8(truncatingIfNeeded: v >> 8))
                    out.append(UInt8(truncatingIfNeeded: v >> 16)); out.append(UInt8(truncatingIfNeeded: v >> 24))
                }
            }
        }
        return Array(out.prefix(count))
    }
}

/// Uniform random words from a ChaCha20 keystream, for samplers that consume a few at a time
/// (the discrete Gaussian); Swift's `random(in:using:)` draws unbiased ranges from it.
public struct ChaCha20Random: RandomNumberGenerator, Sendable {
    private var stream: ChaCha20Keystream
    private var buffer: ChaCha20Keystream.Blocks
    private var index = 128

    /// A generator seeded from the operating system's CSPRNG.
    public init() { self.init(stream: ChaCha20Keystream()) }

    /// A generator over a given keystream: tests only.
    @_spi(Testing)
    public init(stream: ChaCha20Keystream) {
        self.stream = stream
        buffer = Self.emptyBlocks
    }

    private static var emptyBlocks: ChaCha20Keystream.Blocks { InlineArray(repeating: .zero) }

    public mutating func next() -> UInt64 {
        UInt64(next32()) | (UInt64(next32()) << 32)
    }

    /// The next 32 keystream bits.
    @inline(__always)
    public mutating func next32() -> UInt32 {
        if index == 128 { stream.nextBlocks(into: &buffer); index = 0 }
        let v = buffer[index & 15][index >> 4]
        index += 1
        return v
    }

    /// Uniform on 0 ..< bound, unbiased (Lemire's multiply-and-reject).
    @inline(__always)
    public mutating func uniform(below bound: UInt64) -> UInt64 {
        precondition(bound > 0, "empty range")
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return m.high
    }

    /// Uniform on 0 ..< bound for 128-bit bounds, by masked rejection (under two draws expected).
    @inline(__always)
    public mutating func uniform(below bound: UInt128) -> UInt128 {
        precondition(bound > 0, "empty range")
        if bound <= UInt128(UInt64.max) { return UInt128(uniform(below: UInt64(bound))) }
        let mask = UInt128.max >> (bound - 1).leadingZeroBitCount
        while true {
            let x = ((UInt128(next()) << 64) | UInt128(next())) & mask
            if x < bound { return x }
        }
    }

    /// A fair coin.
    @inline(__always)
    public mutating func coin() -> Bool { next32() & 1 == 1 }
}

/// The randomness of one DP-SGD run when it must be repeated exactly (a networked run compared bit
/// for bit with the simulator): Poisson sampling and Gaussian noise from keystreams keyed by a
/// known seed. Noise anyone can recompute protects nothing: the simulator and the tests use it, a
/// gateway only in a debug build told so by its environment, and it says so in its log.
public struct RepeatableNoise: Sendable, Hashable {
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// The seed of one silo in one round of a run.
    public init(run: UInt64, silo: Int, round: Int) {
        var x = run ^ (UInt64(silo) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(round) &* 0xC2B2_AE3D_27D4_EB4F)
        x = (x ^ (x >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        self.init(seed: x ^ (x >> 29))
    }

    private var key: [UInt32] { [UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32), 0, 0, 0, 0, 0, 0] }

    /// The generator that picks each step's rows.
    public var sampler: ChaCha20Random { ChaCha20Random(stream: ChaCha20Keystream(key: key, nonce: (1, 0))) }
    /// The generator of the noise added to each step's clipped sum.
    public var noise: GaussianNoiseGenerator { GaussianNoiseGenerator(stream: ChaCha20Keystream(key: key, nonce: (2, 0))) }
    /// The generator of discrete Gaussian noise on the grid (`DiscreteNoise`).
    public var integers: ChaCha20Random { ChaCha20Random(stream: ChaCha20Keystream(key: key, nonce: (3, 0))) }
}
