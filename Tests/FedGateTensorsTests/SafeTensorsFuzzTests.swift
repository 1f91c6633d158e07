import FedGateLearning
import FedGateTensors
import Testing

@Suite("safetensors reader under mutated input")
struct SafeTensorsFuzzTests {
    @Test("20 000 mutated files (flipped, inserted and deleted bytes, truncations, forged header lengths): each is read or refused with a reason, never a crash")
    func mutations() throws {
        let valid = try SafeTensors(entries: ["w": .f32(shape: [3, 4], values: (0..<12).map { Float($0) / 7 }),
                                              "b": .f64(shape: [4], values: [1, -2, 3.5, 1e-300])],
                                    metadata: ["fedgate.kind": "model"]).serialized()
        var rng = SimulationRandom(seed: 0xFED6A7E)  // seeded: a failing input can be found again
        var (read, refused) = (0, 0)
        for _ in 0..<20_000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                switch Int.random(in: 0..<5, using: &rng) {
                case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                case 2 where !bytes.isEmpty: bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
                case 3: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
                default:
                    // A forged header length: small, large, or past the end.
                    let n = [UInt64(0), UInt64(1), UInt64(bytes.count), UInt64.max, UInt64(Int.max), UInt64.random(in: 0...UInt64(1 << 40), using: &rng)]
                        .randomElement(using: &rng)!
                    if bytes.count >= 8 { withUnsafeBytes(of: n.littleEndian) { for k in 0..<8 { bytes[k] = $0[k] } } }
                }
            }
            do {
                let file = try SafeTensors(bytes: bytes)
                for entry in file.entries.values { _ = entry.floats }
                read += 1
            } catch {
                #expect(!"\(error)".isEmpty)
                refused += 1
            }
        }
        #expect(read + refused == 20_000 && refused > 10_000, "read \(read), refused \(refused)")
    }
}
