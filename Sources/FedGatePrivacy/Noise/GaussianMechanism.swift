import FedGateTensors

/// The Gaussian mechanism on a model update: clip to L2 norm C, then add N(0, (σC)²) noise to every
/// coordinate, in place. Two passes over memory: a SIMD norm, then a fused scale-and-noise pass.
public struct GaussianMechanism: Sendable, Equatable {
    /// The L2 bound C each update is clipped to.
    public let clipNorm: Double
    /// σ: the noise standard deviation in units of C.
    public let noiseMultiplier: Double

    public init(clipNorm: Double, noiseMultiplier: Double) throws {
        try PrivacyError.require(clipNorm.isFinite && clipNorm > 0, "clip_norm", "must be a finite number > 0, got \(clipNorm)")
        try PrivacyError.require(noiseMultiplier.isFinite && noiseMultiplier >= 0, "noise_multiplier",
                                 "must be a finite number ≥ 0, got \(noiseMultiplier)")
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
    }

    /// What clipping did to one update.
    public struct Outcome: Sendable, Equatable {
        /// The update's L2 norm before clipping.
        public let normBefore: Double
        /// The factor applied (1 when the update was already within the bound).
        public let scale: Double
        /// Whether the update was shrunk.
        public var wasClipped: Bool { scale < 1 }
    }

    /// The DP event of releasing one such noised update with sensitivity C.
    public var event: DPEvent { .gaussian(noiseMultiplier: noiseMultiplier) }

    /// Clips and noises a flat update in place.
    @discardableResult
    public func apply(to update: UnsafeMutableBufferPointer<Float>, noise: inout GaussianNoiseGenerator) throws -> Outcome {
        let norm = VectorMath.sumOfSquares(UnsafeBufferPointer(update)).squareRoot()
        try Self.checkFinite(norm, field: "update")
        let scale = norm > clipNorm ? clipNorm / norm : 1
        noise.scaleAndAddNoise(update, scale: Float(scale), noiseStandardDeviation: Float(noiseMultiplier * clipNorm))
        return Outcome(normBefore: norm, scale: scale)
    }

    /// Clips and noises a flat update in place.
    @discardableResult
    public func apply(to update: inout [Float], noise: inout GaussianNoiseGenerator) throws -> Outcome {
        try update.withUnsafeMutableBufferPointer { try apply(to: $0, noise: &noise) }
    }

    /// Clips a set of named tensors as one vector and noises every coordinate.
    @discardableResult
    public func apply(to update: inout TensorSet, noise: inout GaussianNoiseGenerator) throws -> Outcome {
        let norm = update.l2Norm
        try Self.checkFinite(norm, field: "update")
        let scale = norm > clipNorm ? clipNorm / norm : 1
        let sd = Float(noiseMultiplier * clipNorm)
        update.forEachValues { values in
            values.withUnsafeMutableBufferPointer { noise.scaleAndAddNoise($0, scale: Float(scale), noiseStandardDeviation: sd) }
        }
        return Outcome(normBefore: norm, scale: scale)
    }

    private static func checkFinite(_ norm: Double, field: String) throws {
        try PrivacyError.require(norm.isFinite, field, "contains NaN or infinite values; refusing to release it")
    }
}
