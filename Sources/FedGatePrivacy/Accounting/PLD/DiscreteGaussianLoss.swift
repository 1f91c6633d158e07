import Foundation

/// The privacy loss of the discrete Gaussian N_Z(0, σ²) shifted by an integer sensitivity Δ:
/// upper = N_Z(0, σ²), lower = N_Z(Δ, σ²), loss at k = ((k−Δ)² − k²)/(2σ²). Built from the exact
/// pmf (outcomes with mass ≤ e^−50·… beyond ±(Δ + 40σ) ignored, their mass counted at +∞).
struct DiscreteGaussianLoss: Sendable {
    let sigma: Double
    let sensitivity: Double

    func pmf(interval: Double) -> PLDPmf {
        let delta = sensitivity.rounded()
        let reach = Int((40 * sigma + abs(delta) + 2).rounded(.up))
        let s2 = 2 * sigma * sigma
        // Normaliser of N_Z(0, σ²).
        var logZ = -Double.infinity
        for k in -reach...reach { logZ = SpecialFunctions.logAdd(logZ, -Double(k * k) / s2) }
        var masses: [Int: Double] = [:]
        var covered = 0.0
        for k in -reach...reach {
            let p = exp(-Double(k * k) / s2 - logZ)
            covered += p
            let dk = Double(k)
            let loss = ((dk - delta) * (dk - delta) - dk * dk) / s2
            masses[Int((loss / interval).rounded(.up)), default: 0] += p
        }
        let lo = masses.keys.min()!, hi = masses.keys.max()!
        var probs = Array(repeating: 0.0, count: hi - lo + 1)
        for (k, p) in masses { probs[k - lo] += p }
        return PLDPmf(interval: interval, lowerLoss: lo, probs: probs, infinityMass: max(0, 1 - covered))
    }
}
