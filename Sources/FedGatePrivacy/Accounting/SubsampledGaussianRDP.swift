import Foundation

/// Rényi DP of the Poisson-subsampled Gaussian mechanism, computed exactly
/// (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3).
///
/// Integer orders use the binomial expansion; fractional orders use the two-sided series with signed
/// binomial coefficients summed in log space (not the |coefficient| upper bound dp-accounting uses
/// for fractional orders). The series stops where Opacus' reference implementation stops, so the
/// two agree to rounding.
enum SubsampledGaussianRDP {
    /// RDP at order `alpha` of one step with sampling probability `q` and noise multiplier `sigma`.
    static func rdp(q: Double, sigma: Double, alpha: Double) -> Double {
        if q == 0 { return 0 }
        if sigma == 0 { return .infinity }
        if q == 1 { return alpha / (2 * sigma * sigma) }
        if alpha.isInfinite { return .infinity }
        let logA = alpha == alpha.rounded() ? logAInteger(q: q, sigma: sigma, alpha: Int(alpha))
                                            : logAFractional(q: q, sigma: sigma, alpha: alpha)
        return logA / (alpha - 1)
    }

    /// log A_α for integer α: log Σ_i C(α,i) q^i (1−q)^(α−i) exp((i²−i)/(2σ²)).
    static func logAInteger(q: Double, sigma: Double, alpha: Int) -> Double {
        var logA = -Double.infinity
        let logQ = log(q), log1mQ = log1p(-q)
        let twoSigma2 = 2 * sigma * sigma
        let a = Double(alpha)
        var logBinom = 0.0  // log C(α, 0)
        for i in 0...alpha {
            let di = Double(i)
            if i > 0 { logBinom += log((a - di + 1) / di) }
            let s = logBinom + di * logQ + (a - di) * log1mQ + (di * di - di) / twoSigma2
            logA = SpecialFunctions.logAdd(logA, s)
        }
        return logA
    }

    /// log A_α for fractional α, by the two-sided erfc series.
    static func logAFractional(q: Double, sigma: Double, alpha: Double) -> Double {
        var logA0 = -Double.infinity, logA1 = -Double.infinity
        let sigma2 = sigma * sigma
        let z0 = sigma2 * log(1 / q - 1) + 0.5
        let logQ = log(q), log1mQ = log1p(-q)
        let sqrt2Sigma = 2.0.squareRoot() * sigma
        var coef = 1.0  // C(α, i), carried by its recurrence; its sign alternates past i > α
        var i = 0.0
        while true {
            if i > 0 { coef *= (alpha - i + 1) / i }
            let logCoef = log(abs(coef))
            let j = alpha - i
            let logT0 = logCoef + i * logQ + j * log1mQ
            let logT1 = logCoef + j * logQ + i * log1mQ
            let logE0 = SpecialFunctions.logHalf + SpecialFunctions.logErfc((i - z0) / sqrt2Sigma)
            let logE1 = SpecialFunctions.logHalf + SpecialFunctions.logErfc((z0 - j) / sqrt2Sigma)
            let logS0 = logT0 + (i * i - i) / (2 * sigma2) + logE0
            let logS1 = logT1 + (j * j - j) / (2 * sigma2) + logE1
            if coef > 0 {
                logA0 = SpecialFunctions.logAdd(logA0, logS0)
                logA1 = SpecialFunctions.logAdd(logA1, logS1)
            } else {
                logA0 = SpecialFunctions.logSub(logA0, logS0)
                logA1 = SpecialFunctions.logSub(logA1, logS1)
            }
            i += 1
            if max(logS0, logS1) < -30 || i > 100_000 { break }
        }
        return SpecialFunctions.logAdd(logA0, logA1)
    }
}
