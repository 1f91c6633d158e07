import Foundation

/// The concentrated-DP bound of the distributed discrete Gaussian (Kairouz, Liu, Steinke 2021,
/// "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
/// Thm 1): the sum of n independent N_Z(0, σ²) per coordinate (σ ≥ ½), added to an integer vector
/// of dimension d and L2 sensitivity Δ, is ½ε²-zCDP with
///   ε = min( √(Δ²/(nσ²) + ½·τ·d),  Δ/(√n·σ) + τ·√d ),   τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)).
/// With n = 1 this is the single discrete Gaussian's Δ²/(2σ²).
public enum DistributedDiscreteGaussianBound {
    /// τ: how far the sum of n discrete Gaussians is from one discrete Gaussian of variance nσ².
    public static func tau(localSigma sigma: Double, silos n: Int) -> Double {
        guard n > 1 else { return 0 }
        var s = 0.0
        for k in 1..<n {
            let kd = Double(k)
            s += exp(-2 * Double.pi * Double.pi * sigma * sigma * kd / (kd + 1))
        }
        return 10 * s
    }

    /// ρ of the ρ-zCDP guarantee (RDP ε(α) = α·ρ).
    public static func rho(localSigma sigma: Double, silos n: Int, dimension d: Int, l2Sensitivity delta: Double) -> Double {
        let t = tau(localSigma: sigma, silos: n)
        let nd = Double(n), dd = Double(d)
        let e1 = (delta * delta / (nd * sigma * sigma) + 0.5 * t * dd).squareRoot()
        let e2 = delta / (nd.squareRoot() * sigma) + t * dd.squareRoot()
        let eps = min(e1, e2)
        return eps * eps / 2
    }
}
