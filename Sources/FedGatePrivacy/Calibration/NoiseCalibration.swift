import Foundation

/// The inverse problem a data scientist asks: what noise multiplier gives ε over so many steps?
public enum NoiseCalibration {
    /// The smallest noise multiplier σ (within `tolerance`) such that `steps` Poisson-sampled
    /// Gaussian steps at rate `samplingProbability` cost at most `targetEpsilon` at `delta`.
    /// The returned σ always satisfies ε(σ) ≤ target. With a `prior` event (what the same records
    /// spend besides, such as a plan's statistics release), ε of the prior and the steps composed.
    public static func noiseMultiplier(
        targetEpsilon: Double, delta: Double, samplingProbability q: Double, steps: Int,
        prior: DPEvent = .noOp, accountant: AccountantKind = .rdp, tolerance: Double = 1e-6
    ) throws -> Double {
        try PrivacyError.require(targetEpsilon.isFinite && targetEpsilon > 0, "target_epsilon",
                                 "must be a finite number > 0, got \(targetEpsilon)")
        try PrivacyError.checkDelta(delta)
        try PrivacyError.require(q.isFinite && q > 0 && q <= 1, "sampling_probability", "must be in (0, 1], got \(q)")
        try PrivacyError.require(steps >= 1, "steps", "must be ≥ 1, got \(steps)")
        try PrivacyError.require(tolerance.isFinite && tolerance > 0, "tolerance", "must be > 0, got \(tolerance)")
        if prior != .noOp {
            let spent = try epsilon(of: prior, delta: delta, accountant: accountant)
            try PrivacyError.require(spent < targetEpsilon, "target_epsilon",
                                     "the release before training alone spends ε = \(spent), not below the target \(targetEpsilon); raise the target or that release's noise")
        }
        return try smallestParameter(target: targetEpsilon, tolerance: tolerance) { sigma in
            let run = DPEvent.dpsgd(samplingProbability: q, noiseMultiplier: sigma, steps: steps)
            return try epsilon(of: prior == .noOp ? run : .composed([prior, run]), delta: delta, accountant: accountant)
        }
    }

    /// Smallest x > 0 with f(x) ≤ target for a non-increasing f: bracket by doubling, then a
    /// regula-falsi/bisection hybrid on log-scale. Returns the upper end of the final bracket.
    static func smallestParameter(target: Double, tolerance: Double,
                                  _ f: (Double) throws -> Double) throws -> Double {
        var lo = 0.0, hi = 1.0
        var fHi = try f(hi)
        var fLo = Double.infinity
        while fHi > target {
            lo = hi; fLo = fHi
            hi *= 2
            guard hi < 1e7 else {
                throw PrivacyError(field: "target_epsilon", reason: "no noise multiplier below 1e7 reaches ε = \(target); raise the target or lower the number of steps")
            }
            fHi = try f(hi)
        }
        var side = 0
        while hi - lo > tolerance {
            var mid: Double
            if fLo.isFinite && fHi.isFinite && fLo != fHi {
                // Regula falsi on (x, f(x)), with Illinois damping so neither end stalls.
                var fl = fLo - target, fh = fHi - target
                if side == 1 { fl /= 2 } else if side == -1 { fh /= 2 }
                mid = hi - fh * (hi - lo) / (fh - fl)
                if !(mid > lo && mid < hi) { mid = (lo + hi) / 2 }
                // Keep each step shrinking the bracket by a useful amount.
                let minStep = tolerance / 4
                mid = min(max(mid, lo + minStep), hi - minStep)
            } else {
                mid = (lo + hi) / 2
            }
            let fMid = try f(mid)
            if fMid > target { lo = mid; fLo = fMid; side = side == 1 ? 0 : -1 }
            else { hi = mid; fHi = fMid; side = side == -1 ? 0 : 1 }
            if side == 0 && hi - lo > tolerance {
                // Alternate with a bisection step so the worst case stays logarithmic.
                let b = (lo + hi) / 2
                let fb = try f(b)
                if fb > target { lo = b; fLo = fb } else { hi = b; fHi = fb }
            }
        }
        return hi
    }
}
