import Foundation

/// The analytic Gaussian mechanism (Balle & Wang 2018): the exact (ε, δ) of one Gaussian release.
public enum AnalyticGaussian {
    /// δ(ε) of Gaussian noise σ on a query of L2 sensitivity Δ:
    /// Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ).
    public static func delta(sigma: Double, epsilon: Double, sensitivity: Double = 1) throws -> Double {
        try checkPositive(sigma, "sigma")
        try checkPositive(sensitivity, "sensitivity")
        try PrivacyError.checkEpsilon(epsilon)
        return deltaUnchecked(sigma: sigma, epsilon: epsilon, sensitivity: sensitivity)
    }

    /// The smallest σ with δ(ε) ≤ δ for one release.
    public static func sigma(epsilon: Double, delta: Double, sensitivity: Double = 1) throws -> Double {
        try PrivacyError.require(epsilon.isFinite && epsilon > 0, "epsilon", "must be a finite number > 0, got \(epsilon)")
        try PrivacyError.checkDelta(delta)
        try checkPositive(sensitivity, "sensitivity")
        // δ(σ) decreases in σ: bisect on log σ to full double precision.
        var lo = log(1e-6 * sensitivity), hi = log(1e6 * sensitivity)
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if deltaUnchecked(sigma: exp(mid), epsilon: epsilon, sensitivity: sensitivity) > delta { lo = mid } else { hi = mid }
            if hi - lo < 1e-16 { break }
        }
        return exp(hi)
    }

    /// The smallest ε with δ(ε) ≤ δ for one release with noise σ.
    public static func epsilon(sigma: Double, delta: Double, sensitivity: Double = 1) throws -> Double {
        try checkPositive(sigma, "sigma")
        try checkPositive(sensitivity, "sensitivity")
        try PrivacyError.checkDelta(delta)
        if deltaUnchecked(sigma: sigma, epsilon: 0, sensitivity: sensitivity) <= delta { return 0 }
        var lo = 0.0, hi = 1.0
        while deltaUnchecked(sigma: sigma, epsilon: hi, sensitivity: sensitivity) > delta { lo = hi; hi *= 2 }
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if deltaUnchecked(sigma: sigma, epsilon: mid, sensitivity: sensitivity) > delta { lo = mid } else { hi = mid }
            if hi - lo <= 1e-15 * hi { break }
        }
        return hi
    }

    static func deltaUnchecked(sigma: Double, epsilon: Double, sensitivity: Double) -> Double {
        let a = sensitivity / (2 * sigma), b = epsilon * sigma / sensitivity
        let d = SpecialFunctions.normalCDF(a - b) - exp(epsilon + SpecialFunctions.logNormalCDF(-a - b))
        return max(0, d)
    }

    private static func checkPositive(_ v: Double, _ field: String) throws {
        try PrivacyError.require(v.isFinite && v > 0, field, "must be a finite number > 0, got \(v)")
    }
}
