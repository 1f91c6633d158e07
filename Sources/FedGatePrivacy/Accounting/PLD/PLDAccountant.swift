import Foundation

/// Privacy-loss-distribution accountant (dp-accounting's `PLDAccountant` method): each event becomes
/// a pessimistic connect-the-dots discretisation of its privacy loss (interval 1e-4 by default),
/// compositions are convolutions (FFT), and ε(δ) is read off the composed distribution. Tighter than
/// RDP on the same events; both directions of add-or-remove-one are tracked and the worse is reported.
public struct PLDAccountant: PrivacyAccountant {
    /// The width of the loss grid.
    public let valueDiscretizationInterval: Double
    /// Mass allowed to fall outside a composition's computed range (counted at +∞).
    public let tailMassTruncation: Double

    private var remove: PLDPmf
    private var add: PLDPmf

    public init(valueDiscretizationInterval: Double = 1e-4, tailMassTruncation: Double = 1e-15) {
        precondition(valueDiscretizationInterval > 0 && tailMassTruncation >= 0)
        self.valueDiscretizationInterval = valueDiscretizationInterval
        self.tailMassTruncation = tailMassTruncation
        remove = .identity(interval: valueDiscretizationInterval)
        add = remove
    }

    public mutating func compose(_ event: DPEvent) throws {
        try event.validate()
        let (r, a) = try pmfs(of: event.simplified)
        // Compute both before assigning, so a refused event leaves the accountant unchanged.
        let newRemove = try remove.composed(with: r, tailMassTruncation: tailMassTruncation)
        let newAdd = try add.composed(with: a, tailMassTruncation: tailMassTruncation)
        remove = newRemove
        add = newAdd
    }

    public func epsilon(delta: Double) throws -> Double {
        try PrivacyError.checkDelta(delta)
        return max(remove.epsilon(delta: delta), add.epsilon(delta: delta))
    }

    public func delta(epsilon: Double) throws -> Double {
        try PrivacyError.checkEpsilon(epsilon)
        return max(remove.delta(epsilon: epsilon), add.delta(epsilon: epsilon))
    }

    /// The (remove, add) distributions of one event.
    private func pmfs(of event: DPEvent) throws -> (PLDPmf, PLDPmf) {
        let h = valueDiscretizationInterval
        func mechanism(_ noise: AdditiveNoiseLoss.Noise, q: Double) throws -> (PLDPmf, PLDPmf) {
            let r = try AdditiveNoiseLoss(noise: noise, q: q, adjacency: .remove).connectDotsPmf(interval: h)
            if q == 1 { return (r, r) }  // symmetric without subsampling
            return (r, try AdditiveNoiseLoss(noise: noise, q: q, adjacency: .add).connectDotsPmf(interval: h))
        }
        switch event {
        case .noOp:
            return (.identity(interval: h), .identity(interval: h))
        case .gaussian(let sigma):
            return try mechanism(.gaussian(sigma: sigma), q: 1)
        case .laplace(let b):
            return try mechanism(.laplace(scale: b), q: 1)
        case .discreteGaussian(let sigma, let sensitivity):
            let pmf = DiscreteGaussianLoss(sigma: sigma, sensitivity: sensitivity).pmf(interval: h)
            return (pmf, pmf)
        case .distributedDiscreteGaussian:
            throw PrivacyError(field: "event.distributed_discrete_gaussian",
                               reason: "the PLD accountant has no bound for the distributed discrete Gaussian; use the RDP accountant (its zCDP bound)")
        case .poissonSampled(let q, let inner):
            switch inner {
            case .gaussian(let sigma): return try mechanism(.gaussian(sigma: sigma), q: q)
            case .laplace(let b): return try mechanism(.laplace(scale: b), q: q)
            case .noOp: return (.identity(interval: h), .identity(interval: h))
            default:
                if q == 1 { return try pmfs(of: inner) }
                throw PrivacyError(field: "event.poisson_sampled.event",
                                   reason: "the PLD accountant supports Poisson sampling of the Gaussian and Laplace mechanisms only")
            }
        case .selfComposed(let inner, let count):
            if count == 0 { return (.identity(interval: h), .identity(interval: h)) }
            let (r, a) = try pmfs(of: inner)
            let rc = try r.selfComposed(count, tailMassTruncation: tailMassTruncation)
            if r == a { return (rc, rc) }
            return (rc, try a.selfComposed(count, tailMassTruncation: tailMassTruncation))
        case .composed(let events):
            var r = PLDPmf.identity(interval: h), a = r
            for e in events {
                let (er, ea) = try pmfs(of: e)
                r = try r.composed(with: er, tailMassTruncation: tailMassTruncation)
                a = try a.composed(with: ea, tailMassTruncation: tailMassTruncation)
            }
            return (r, a)
        }
    }
}
