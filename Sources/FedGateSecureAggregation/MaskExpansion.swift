import FedGatePrivacy

/// Expands a 32-byte seed into a mask over Z_(2³²)ᵈ with our SIMD ChaCha20 keystream, and adds or
/// subtracts it in place. Silos and the broker call the same function, so masks cancel exactly.
public enum MaskExpansion {
    /// The ChaCha20 key words of a 32-byte seed (little-endian).
    static func keyWords(_ seed: [UInt8]) -> [UInt32] {
        precondition(seed.count == 32, "a mask seed is 32 bytes")
        return (0..<8).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(seed[4 * i + $1]) << (8 * $1) } }
    }

    /// buffer ← buffer ± PRG(seed), element-wise mod 2³².
    public static func apply(seed: [UInt8], subtract: Bool, to buffer: UnsafeMutableBufferPointer<UInt32>) {
        var stream = ChaCha20Keystream(key: keyWords(seed), nonce: (0x6d61_736b, 0))  // "mask"
        var words = ChaCha20Keystream.Blocks(repeating: .zero)
        guard let base = buffer.baseAddress else { return }
        let raw = UnsafeMutableRawPointer(base)
        typealias W = SIMD8<UInt32>
        let stride = MemoryLayout<W>.stride
        var i = 0
        while i + 128 <= buffer.count {
            stream.nextBlocks(into: &words)
            let start = raw + i * MemoryLayout<UInt32>.stride
            for k in 0..<16 {
                let v = start.loadUnaligned(fromByteOffset: k * stride, as: W.self)
                start.storeBytes(of: subtract ? v &- words[k] : v &+ words[k], toByteOffset: k * stride, as: W.self)
            }
            i += 128
        }
        if i < buffer.count {
            stream.nextBlocks(into: &words)
            for t in 0..<(buffer.count - i) {
                let w = words[t / 8][t % 8]
                buffer[i + t] = subtract ? buffer[i + t] &- w : buffer[i + t] &+ w
            }
        }
    }

    /// buffer ← buffer ± PRG(seed) for an array.
    public static func apply(seed: [UInt8], subtract: Bool, to buffer: inout [UInt32]) {
        buffer.withUnsafeMutableBufferPointer { apply(seed: seed, subtract: subtract, to: $0) }
    }
}
