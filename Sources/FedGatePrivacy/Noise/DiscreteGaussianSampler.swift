/// Exact sampling from the discrete Gaussian N_Z(0, σ²) (Canonne, Kamath, Steinke 2020,
/// Algorithms 1–3): discrete Laplace proposals accepted with probability exp(−γ), every
/// probability a ratio of integers, no floating point anywhere. Randomness comes only from a
/// ChaCha20 keystream (the type takes no other generator).
///
/// σ² is held as a rational n/d. 128-bit integer arithmetic bounds the parameters: the
/// initialiser refuses σ² whose worst-case intermediate values could overflow. Proposals with
/// |Y| > 100·t are rejected outright (their probability is below e^−100, so the output is within
/// total variation 2⁻¹⁴⁰ of N_Z(0, σ²)); the Bernoulli(exp(−γ)) loop stops at K = 64 (reaching it
/// has probability below 1/64! < 2⁻²⁹⁵).
public struct DiscreteGaussianSampler: Sendable {
    /// σ² = sigmaSquaredNumerator / sigmaSquaredDenominator, exactly.
    public let sigmaSquaredNumerator: UInt64
    public let sigmaSquaredDenominator: UInt64
    /// t = ⌊σ⌋ + 1, the discrete Laplace scale of the proposals.
    let t: UInt64

    /// The σ actually sampled (√(n/d)), for the DP event.
    public var sigma: Double { (Double(sigmaSquaredNumerator) / Double(sigmaSquaredDenominator)).squareRoot() }

    /// A sampler for σ² = numerator/denominator.
    public init(sigmaSquaredNumerator n: UInt64, denominator d: UInt64) throws {
        try PrivacyError.require(n > 0 && d > 0, "sigma", "σ² must be a positive ratio, got \(n)/\(d)")
        // ⌊σ⌋ = largest f with f²·d ≤ n.
        var f = UInt64((Double(n) / Double(d)).squareRoot())
        while f > 0 && UInt128(f) * UInt128(f) * UInt128(d) > UInt128(n) { f -= 1 }
        while UInt128(f + 1) * UInt128(f + 1) * UInt128(d) <= UInt128(n) { f += 1 }
        let t = f + 1
        // Worst cases: A = |Y|·d·t − n with |Y| ≤ 100t must square within UInt128, and so must
        // 2·n·d·t²·K for K up to 64.
        let maxA = UInt128(100 * t) * UInt128(d) * UInt128(t) + UInt128(n)
        let (sq, o1) = maxA.multipliedReportingOverflow(by: maxA)
        let (b0, o2) = (UInt128(2) * UInt128(n) * UInt128(d)).multipliedReportingOverflow(by: UInt128(t) * UInt128(t))
        let (_, o3) = b0.multipliedReportingOverflow(by: Self.maxK)
        _ = sq
        try PrivacyError.require(!(o1 || o2 || o3), "sigma",
                                 "σ² = \(n)/\(d) is too large for exact 128-bit sampling; use a smaller denominator or σ below about 2^30")
        sigmaSquaredNumerator = n
        sigmaSquaredDenominator = d
        self.t = t
    }

    /// A sampler for σ, with σ² rounded to the finest power-of-two denominator (≤ 2²⁰) that the
    /// exact arithmetic allows. Read `sigma` for the value actually sampled.
    public init(sigma: Double) throws {
        try PrivacyError.require(sigma.isFinite && sigma > 0, "sigma", "must be a finite number > 0, got \(sigma)")
        var lastError: (any Error)?
        for k in stride(from: 20, through: 0, by: -1) {
            let d = UInt64(1) << UInt64(k)
            let scaled = (sigma * sigma * Double(d)).rounded()
            guard scaled >= 1, scaled < 1.8e19 else { continue }
            do {
                try self.init(sigmaSquaredNumerator: UInt64(scaled), denominator: d)
                return
            } catch { lastError = error }
        }
        throw lastError ?? PrivacyError(field: "sigma", reason: "cannot represent σ = \(sigma) exactly")
    }

    static let maxK: UInt128 = 64

    /// One draw.
    public func sample(using rng: inout ChaCha20Random) -> Int64 {
        let n = UInt128(sigmaSquaredNumerator), d = UInt128(sigmaSquaredDenominator), tt = UInt128(t)
        let denominator = 2 * n * d * tt * tt
        while true {
            let y = discreteLaplace(using: &rng)
            let magnitude = UInt128(y.magnitude)
            if magnitude > 100 * tt { continue }
            // γ = (|Y| − σ²/t)² / (2σ²) = A² / (2·n·d·t²), A = |Y|·d·t − n.
            let yt = magnitude * d * tt
            let a = yt >= n ? yt - n : n - yt
            if Self.bernoulliExpMinus(numerator: a * a, denominator: denominator, using: &rng) { return y }
        }
    }

    /// Fills a buffer with independent draws.
    public func sample(_ count: Int, using rng: inout ChaCha20Random) -> [Int64] {
        (0..<count).map { _ in sample(using: &rng) }
    }

    /// Discrete Laplace with scale t: P(x) ∝ exp(−|x|/t) (CKS Algorithm 2).
    func discreteLaplace(using rng: inout ChaCha20Random) -> Int64 {
        while true {
            let u = rng.uniform(below: t)
            guard Self.bernoulliExpMinus(numerator: UInt128(u), denominator: UInt128(t), using: &rng) else { continue }
            var v: UInt64 = 0
            while Self.bernoulliExpMinus(numerator: 1, denominator: 1, using: &rng) { v += 1 }
            let x = u + t * v
            let negative = rng.coin()
            if negative && x == 0 { continue }
            return negative ? -Int64(x) : Int64(x)
        }
    }

    /// Bernoulli(exp(−num/den)) exactly (CKS Algorithm 1).
    static func bernoulliExpMinus(numerator: UInt128, denominator: UInt128, using rng: inout ChaCha20Random) -> Bool {
        var num = numerator
        if num > denominator {
            // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋))
            let whole = num / denominator
            var i: UInt128 = 0
            while i < whole {
                if !bernoulliExpMinus(numerator: 1, denominator: 1, using: &rng) { return false }
                i += 1
            }
            num -= whole * denominator
        }
        // γ ≤ 1: K ← 1; while Bernoulli(γ/K): K += 1; accept iff K is odd.
        var k: UInt128 = 1
        while k < maxK {
            let bound = denominator * k
            if rng.uniform(below: bound) >= num { break }
            k += 1
        }
        return k % 2 == 1
    }
}
