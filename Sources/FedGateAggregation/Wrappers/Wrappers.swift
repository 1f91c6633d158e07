import Foundation
import FedGatePrivacy
import FedGateTensors

/// Norm bounding (Sun et al. 2019): every update is scaled down to L2 norm ≤ `bound` before the
/// inner strategy sees it.
public struct NormBounded<Inner: AggregationStrategy>: AggregationStrategy {
    public var inner: Inner
    public let bound: Double
    public var name: String { "norm-bounded(\(inner.name))" }
    public var maximumHeldUpdates: Int? { inner.maximumHeldUpdates }

    public init(_ inner: Inner, bound: Double) throws {
        guard bound.isFinite, bound > 0 else { throw AggregationError("norm bound must be > 0, got \(bound)") }
        self.inner = inner
        self.bound = bound
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try inner.aggregate(global: global, updates: updates.map { Self.clip($0, to: bound) })
    }

    static func clip(_ u: ClientUpdate, to bound: Double) -> ClientUpdate {
        let norm = VectorMath.l2Norm(u.delta)
        guard norm > bound else { return u }
        var c = u
        VectorMath.scale(&c.delta, by: Float(bound / norm))
        return c
    }
}

/// Central DP with fixed clipping (McMahan et al. 2018; Flower's
/// `DifferentialPrivacyServerSideFixedClipping`): clip each update to C, average them unweighted
/// through the inner strategy, add N(0, (z·C/n)²) to the average. Each round spends
/// Gaussian(z) at the silo level.
public struct CentralDPFixedClipping<Inner: AggregationStrategy>: AggregationStrategy {
    public var inner: Inner
    public let clipNorm: Double
    public let noiseMultiplier: Double
    public var name: String { "central-dp(\(inner.name))" }
    public private(set) var events: [DPEvent] = []

    public init(_ inner: Inner, clipNorm: Double, noiseMultiplier: Double) throws {
        guard clipNorm > 0, noiseMultiplier > 0 else { throw AggregationError("central DP needs a clip norm and noise multiplier > 0") }
        self.inner = inner
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        let clipped = updates.map { ClientUpdate(silo: $0.silo, delta: NormBounded<Inner>.clip($0, to: clipNorm).delta, examples: 1) }
        var outcome = try inner.aggregate(global: global, updates: clipped)
        var noise = GaussianNoiseGenerator()
        outcome.parameters.withUnsafeMutableBufferPointer {
            noise.scaleAndAddNoise($0, scale: 1, noiseStandardDeviation: Float(noiseMultiplier * clipNorm / Double(updates.count)))
        }
        events.append(.gaussian(noiseMultiplier: noiseMultiplier))
        return outcome
    }
}

/// Central DP with adaptive clipping (Andrew et al. 2021): the clip norm tracks the `quantile` of
/// update norms, estimated from a noised count of unclipped updates, C ← C·exp(−η·(b̃ − γ)). The
/// count's noise σ_b takes part of the budget: the update noise is z_Δ = (z⁻² − (2σ_b)⁻²)^(−½), so
/// each round is still Gaussian(z) overall.
public struct CentralDPAdaptiveClipping<Inner: AggregationStrategy>: AggregationStrategy {
    public var inner: Inner
    public private(set) var clipNorm: Double
    public let noiseMultiplier: Double
    public let quantile: Double
    public let clipLearningRate: Double
    public let countNoise: Double
    public var name: String { "central-dp-adaptive(\(inner.name))" }
    public private(set) var events: [DPEvent] = []

    public init(_ inner: Inner, initialClipNorm: Double = 0.1, noiseMultiplier: Double, quantile: Double = 0.5,
                clipLearningRate: Double = 0.2, countNoise: Double? = nil, expectedSilos: Int) throws {
        guard initialClipNorm > 0, noiseMultiplier > 0, quantile > 0, quantile < 1, expectedSilos >= 1 else {
            throw AggregationError("adaptive clipping needs a positive clip norm and noise multiplier, and a quantile in (0, 1)")
        }
        let sigmaB = countNoise ?? Double(expectedSilos) / 20
        guard 2 * sigmaB > noiseMultiplier else {
            throw AggregationError("the count noise σ_b = \(sigmaB) is too small for z = \(noiseMultiplier): need 2σ_b > z")
        }
        self.inner = inner
        self.clipNorm = initialClipNorm
        self.noiseMultiplier = noiseMultiplier
        self.quantile = quantile
        self.clipLearningRate = clipLearningRate
        self.countNoise = sigmaB
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        let n = Double(updates.count)
        let unclipped = updates.filter { VectorMath.l2Norm($0.delta) <= clipNorm }.count
        var noise = GaussianNoiseGenerator()
        var draw = [Float](repeating: 0, count: 1)
        draw.withUnsafeMutableBufferPointer { noise.fill($0) }
        let fraction = (Double(unclipped) + Double(draw[0]) * countNoise) / n
        let zDelta = 1 / (1 / (noiseMultiplier * noiseMultiplier) - 1 / (4 * countNoise * countNoise)).squareRoot()
        let clipped = updates.map { ClientUpdate(silo: $0.silo, delta: NormBounded<Inner>.clip($0, to: clipNorm).delta, examples: 1) }
        var outcome = try inner.aggregate(global: global, updates: clipped)
        outcome.parameters.withUnsafeMutableBufferPointer {
            noise.scaleAndAddNoise($0, scale: 1, noiseStandardDeviation: Float(zDelta * clipNorm / n))
        }
        clipNorm *= exp(-clipLearningRate * (fraction - quantile))
        events.append(.gaussian(noiseMultiplier: noiseMultiplier))
        return outcome
    }
}
