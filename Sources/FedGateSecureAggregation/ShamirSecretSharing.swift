/// Shamir's t-of-n secret sharing of 32-byte secrets over GF(2⁶¹ − 1): the secret is cut into five
/// 56-bit chunks, each the constant term of its own random polynomial of degree t − 1.
public struct ShamirSecretSharing: Sendable {
    /// One party's share: the evaluation point and the five chunk values.
    public struct Share: Sendable, Equatable, Codable {
        public let x: UInt64
        public let values: [UInt64]
    }

    static let chunkBytes = 7
    static let chunks = 5  // 5 × 7 = 35 ≥ 32 bytes

    public let threshold: Int

    public init(threshold: Int) throws {
        guard threshold >= 1 else { throw SecureAggregationError.malformed("the Shamir threshold must be ≥ 1, got \(threshold)") }
        self.threshold = threshold
    }

    /// Shares of `secret` (exactly 32 bytes) for the evaluation points `xs` (distinct, non-zero).
    public func split(_ secret: [UInt8], for xs: [UInt64]) throws -> [Share] {
        guard secret.count == 32 else { throw SecureAggregationError.malformed("a shared secret must be 32 bytes, got \(secret.count)") }
        guard xs.count >= threshold else {
            throw SecureAggregationError.malformed("\(xs.count) share holders cannot meet the threshold \(threshold)")
        }
        var rng = SystemRandomNumberGenerator()
        let constants = (0..<Self.chunks).map { c -> UInt64 in
            var v: UInt64 = 0
            for b in 0..<Self.chunkBytes where c * Self.chunkBytes + b < 32 {
                v |= UInt64(secret[c * Self.chunkBytes + b]) << (8 * UInt64(b))
            }
            return v
        }
        let polynomials = constants.map { constant in
            [constant] + (1..<threshold).map { _ in PrimeField.random(using: &rng) }
        }
        return xs.map { x in
            Share(x: x, values: polynomials.map { coefficients in
                // Horner's rule from the highest coefficient.
                coefficients.reversed().reduce(UInt64(0)) { PrimeField.add(PrimeField.mul($0, x), $1) }
            })
        }
    }

    /// The secret from at least `threshold` shares (Lagrange interpolation at 0).
    public func reconstruct(_ shares: [Share]) throws -> [UInt8] {
        let used = Array(shares.prefix(threshold))
        guard used.count == threshold else {
            throw SecureAggregationError.malformed("\(shares.count) shares cannot reconstruct a secret with threshold \(threshold)")
        }
        guard Set(used.map(\.x)).count == used.count, used.allSatisfy({ $0.x != 0 && $0.values.count == Self.chunks }) else {
            throw SecureAggregationError.malformed("shares must have distinct non-zero points and \(Self.chunks) values")
        }
        // Lagrange basis at 0: λ_j = Π_{m≠j} x_m / (x_m − x_j).
        let lambdas = used.indices.map { j -> UInt64 in
            var num: UInt64 = 1, den: UInt64 = 1
            for m in used.indices where m != j {
                num = PrimeField.mul(num, used[m].x)
                den = PrimeField.mul(den, PrimeField.sub(used[m].x, used[j].x))
            }
            return PrimeField.mul(num, PrimeField.inverse(den))
        }
        var secret = [UInt8](repeating: 0, count: 32)
        for c in 0..<Self.chunks {
            var v: UInt64 = 0
            for j in used.indices { v = PrimeField.add(v, PrimeField.mul(lambdas[j], used[j].values[c])) }
            for b in 0..<Self.chunkBytes where c * Self.chunkBytes + b < 32 {
                secret[c * Self.chunkBytes + b] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(b)))
            }
        }
        return secret
    }
}
