import FedGatePrivacy
import Foundation

/// DP-SGD's noisy sum released on a grid with the discrete Gaussian (Canonne, Kamath and Steinke
/// 2020), the defence against floating-point attacks on the Gaussian mechanism (Mironov 2012: a
/// float sample's low bits can give away the value it was added to). Each step's sum of clipped rows
/// is rounded to multiples of γ = C / 2^k and integer noise N_Z(0, (σC/γ)²) is added in grid units,
/// so every released coordinate is γ times an integer: no bit of it depends on the unrounded sum.
///
/// Rounding moves the sum by up to γ/2 per coordinate, γ√d/2 in L2 on each of two neighbouring
/// sums; rows are therefore clipped to C − γ√d, and the released sums of neighbours differ by at most
/// C in L2, by a whole number of grid steps in every coordinate. For such shifts the discrete
/// Gaussian's Rényi divergence is at most the continuous one's (CKS 2020, Prop. 5), so a step is
/// accounted as the continuous Gaussian step at the same σ and C, and the plan's DP events are
/// unchanged; the subsampled (Poisson) analysis is taken to carry over as for the distributed
/// discrete Gaussian (Kairouz, Liu and Steinke 2021). The cost: rows clipped by a factor 1 − 2^−k√d
/// (k is chosen so that this is at most 1 %), and noise sampled exactly, slower than the float path.
public struct DiscreteNoise: Sendable {
    /// γ: the grid step.
    public let step: Double
    /// The clipping norm each row gets: C − γ√d.
    public let rowClip: Double
    let sampler: DiscreteGaussianSampler

    /// The grid for clipping norm C, noise multiplier σ and `dimension` parameters: γ = C / 2^k with
    /// k the smallest ≥ 10 for which γ√d ≤ C/100.
    public init(clipNorm c: Double, noiseMultiplier z: Double, dimension d: Int) throws {
        var k = 10
        while pow(2, -Double(k)) * Double(d).squareRoot() > 0.01 { k += 1 }
        step = c * pow(2, -Double(k))
        rowClip = c - step * Double(d).squareRoot()
        // σ in grid units is z·2^k: within the exact sampler's range for every noise multiplier a plan allows.
        sampler = try DiscreteGaussianSampler(sigma: z * pow(2, Double(k)))
    }

    /// The sum rounded to the grid with discrete Gaussian noise added, in place.
    public func release(_ sum: inout [Float], using rng: inout ChaCha20Random) {
        for j in sum.indices {
            let units = (Double(sum[j]) / step).rounded()
            sum[j] = Float((units + Double(sampler.sample(using: &rng))) * step)
        }
    }
}
