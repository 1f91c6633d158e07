import Foundation

/// Numerically careful scalar functions the accountants share (log-space sums, the normal CDF).
enum SpecialFunctions {
    static let logHalf = -0.69314718055994530942
    static let log2 = 0.69314718055994530942
    static let halfLog2Pi = 0.91893853320467274178

    /// log(e^a + e^b) without overflow.
    @inline(__always)
    static func logAdd(_ a: Double, _ b: Double) -> Double {
        let (lo, hi) = a < b ? (a, b) : (b, a)
        if lo == -.infinity { return hi }
        return hi + Foundation.log1p(Foundation.exp(lo - hi))
    }

    /// log(e^a − e^b) for a ≥ b; −∞ when they are equal.
    @inline(__always)
    static func logSub(_ a: Double, _ b: Double) -> Double {
        if b == -.infinity { return a }
        if a == b { return -.infinity }
        // a < b would mean a negative number: callers of the signed series never reach it,
        // but a NaN must never escape, so clamp to the empty sum.
        if a < b { return -.infinity }
        let d = b - a
        // log(1 − e^d): use expm1 near 0 and log1p far from it.
        return a + (d > -0.693 ? Foundation.log(-Foundation.expm1(d)) : Foundation.log1p(-Foundation.exp(d)))
    }

    /// Φ(x), the standard normal CDF, accurate in the lower tail.
    @inline(__always)
    static func normalCDF(_ x: Double) -> Double {
        0.5 * Foundation.erfc(-x / 2.0.squareRoot())
    }

    /// log Φ(x), accurate in both tails (the lower tail by its asymptotic series).
    static func logNormalCDF(_ x: Double) -> Double {
        if x > 6 {
            // log(1 − Φ(−x)) ≈ −Φ(−x): Φ(−x) < 1e-9 here.
            let tail = normalCDF(-x)
            return Foundation.log1p(-tail)
        }
        if x > -20 { return Foundation.log(normalCDF(x)) }
        // Asymptotic expansion: Φ(x) = φ(x)/|x| · (1 − 1/x² + 3/x⁴ − 15/x⁶ + …).
        let lhs = -0.5 * x * x - Foundation.log(-x) - halfLog2Pi
        let inv2 = 1 / (x * x)
        var total = 1.0, last = 0.0, term = 1.0
        var k = 0.0
        while abs(total - last) > Double.ulpOfOne {
            k += 1
            last = total
            term *= -(2 * k - 1) * inv2
            total += term
        }
        return lhs + Foundation.log(total)
    }

    /// log erfc(x) = log 2 + log Φ(−x√2).
    @inline(__always)
    static func logErfc(_ x: Double) -> Double {
        log2 + logNormalCDF(-x * 2.0.squareRoot())
    }
}
