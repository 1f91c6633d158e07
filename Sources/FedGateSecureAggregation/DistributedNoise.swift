import FedGatePrivacy

/// Distributed DP on top of secure aggregation: each silo adds discrete Gaussian noise to its
/// encoded update before masking, so the sum carries the noise of every honest silo and no party —
/// broker included — ever sees an update with less than one silo's share of it.
public struct DistributedNoise: Sendable {
    /// The encoding all silos share in the round.
    public let codec: FixedPointCodec
    /// Each silo's noise, in integer units.
    public let sampler: DiscreteGaussianSampler
    /// The number of silos assumed honest; the accounting counts only their noise.
    public let honestSilos: Int

    /// Parameters for `silos` silos of which at least `honestSilos` add their noise honestly, so that
    /// the honest noise in the sum has standard deviation `noiseMultiplier`·C (C the clip norm).
    /// The encoding leaves 40 standard deviations of the full sum's noise as headroom before 2³¹.
    public init(clipNorm: Double, silos: Int, honestSilos: Int, noiseMultiplier: Double) throws {
        guard honestSilos >= 1, honestSilos <= silos else {
            throw SecureAggregationError.malformed("honest silos must be between 1 and \(silos), got \(honestSilos)")
        }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            throw SecureAggregationError.malformed("noise multiplier must be > 0, got \(noiseMultiplier)")
        }
        let n = Double(silos), m = Double(honestSilos)
        // scale·(n·C + 40·√n·z·C/√m) = 2³¹ − 1 − n, from margin = 40·√n·σ and σ = z·C·scale/√m.
        let scale = (Double(Int32.max) - n) / (clipNorm * (n + 40 * (n / m).squareRoot() * noiseMultiplier))
        let sigma = noiseMultiplier * clipNorm * scale / m.squareRoot()
        sampler = try DiscreteGaussianSampler(sigma: sigma)
        codec = try FixedPointCodec(clipNorm: clipNorm, silos: silos, noiseMargin: 40 * n.squareRoot() * sampler.sigma)
        self.honestSilos = honestSilos
    }

    /// Adds this silo's noise to its encoded update (mod 2³²).
    public func addNoise(to encoded: inout [UInt32], using rng: inout ChaCha20Random) {
        for i in encoded.indices {
            encoded[i] = encoded[i] &+ UInt32(truncatingIfNeeded: sampler.sample(using: &rng))
        }
    }

    /// The DP event of releasing one aggregated sum of `dimension`-long updates.
    public func event(dimension: Int) -> DPEvent {
        .distributedDiscreteGaussian(localSigma: sampler.sigma, silos: honestSilos, dimension: dimension,
                                     l2Sensitivity: codec.l2Sensitivity(dimension: dimension))
    }
}
