/// A privacy spend, as an algebra of mechanisms (after Google's dp-accounting `DpEvent`).
///
/// The ledger stores events, never a bare ε: an accountant derives (ε, δ) from them, so anyone can
/// recompute the figure and a tighter accountant later gives a tighter figure from the same record.
/// Noise multipliers are noise standard deviation divided by L2 sensitivity.
public indirect enum DPEvent: Sendable, Hashable {
    /// Nothing was released.
    case noOp
    /// The Gaussian mechanism with the given noise multiplier (σ / sensitivity).
    case gaussian(noiseMultiplier: Double)
    /// The Laplace mechanism with the given noise multiplier (scale b / L1 sensitivity).
    case laplace(noiseMultiplier: Double)
    /// The discrete Gaussian N_Z(0, σ²) on integers, for a query of integer L2 sensitivity.
    case discreteGaussian(sigma: Double, sensitivity: Double)
    /// The distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): `silos` parties each add
    /// N_Z(0, localSigma²) to every coordinate of a `dimension`-long integer vector before secure
    /// aggregation, protecting a contribution of integer L2 norm ≤ `l2Sensitivity`. `silos` is the
    /// number assumed honest (whose noise is really in the sum).
    case distributedDiscreteGaussian(localSigma: Double, silos: Int, dimension: Int, l2Sensitivity: Double)
    /// The event applied to a Poisson sample of the records, each kept with probability q.
    case poissonSampled(samplingProbability: Double, event: DPEvent)
    /// The event repeated `count` times.
    case selfComposed(event: DPEvent, count: Int)
    /// Several events, one after another.
    case composed([DPEvent])
}

extension DPEvent {
    /// The event a DP-SGD run spends: `steps` Poisson-sampled Gaussian steps.
    public static func dpsgd(samplingProbability q: Double, noiseMultiplier sigma: Double, steps: Int) -> DPEvent {
        .selfComposed(event: .poissonSampled(samplingProbability: q, event: .gaussian(noiseMultiplier: sigma)), count: steps)
    }

    /// Checks every parameter; the error names the offending field by its path in the event.
    public func validate(path: String = "event") throws {
        switch self {
        case .noOp:
            return
        case .gaussian(let sigma):
            try PrivacyError.require(sigma.isFinite && sigma > 0, "\(path).noise_multiplier",
                                     "must be a finite number > 0, got \(sigma)")
        case .laplace(let b):
            try PrivacyError.require(b.isFinite && b > 0, "\(path).noise_multiplier",
                                     "must be a finite number > 0, got \(b)")
        case .discreteGaussian(let sigma, let sensitivity):
            try PrivacyError.require(sigma.isFinite && sigma > 0, "\(path).sigma",
                                     "must be a finite number > 0, got \(sigma)")
            try PrivacyError.require(sensitivity.isFinite && sensitivity > 0, "\(path).sensitivity",
                                     "must be a finite number > 0, got \(sensitivity)")
        case .distributedDiscreteGaussian(let sigma, let silos, let dimension, let sensitivity):
            try PrivacyError.require(sigma.isFinite && sigma >= 0.5, "\(path).local_sigma",
                                     "must be a finite number ≥ 0.5 (the distributed bound needs it), got \(sigma)")
            try PrivacyError.require(silos >= 1, "\(path).silos", "must be ≥ 1, got \(silos)")
            try PrivacyError.require(dimension >= 1, "\(path).dimension", "must be ≥ 1, got \(dimension)")
            try PrivacyError.require(sensitivity.isFinite && sensitivity > 0, "\(path).l2_sensitivity",
                                     "must be a finite number > 0, got \(sensitivity)")
        case .poissonSampled(let q, let event):
            try PrivacyError.require(q.isFinite && q > 0 && q <= 1, "\(path).sampling_probability",
                                     "must be in (0, 1], got \(q)")
            try event.validate(path: "\(path).event")
        case .selfComposed(let event, let count):
            try PrivacyError.require(count >= 0, "\(path).count", "must be ≥ 0, got \(count)")
            try event.validate(path: "\(path).event")
        case .composed(let events):
            for (i, event) in events.enumerated() { try event.validate(path: "\(path).events[\(i)]") }
        }
    }

    /// The same spend in a canonical, smaller form: nested counts multiply, repeats of the same
    /// event anywhere in a composition merge into one self-composition at the first one's place,
    /// compositions of one event unwrap.
    public var simplified: DPEvent {
        switch self {
        case .selfComposed(let inner, let count):
            let s = inner.simplified
            if count == 0 { return .noOp }
            if case .selfComposed(let innerInner, let innerCount) = s {
                return .selfComposed(event: innerInner, count: innerCount * count)
            }
            if s == .noOp { return .noOp }
            return count == 1 ? s : .selfComposed(event: s, count: count)
        case .composed(let events):
            // Composition is commutative: every repeat of an event merges into its first place,
            // wherever it stands (a ledger's entries interleave a plan's releases with its rounds,
            // and each separate group would cost the accountant one more evaluation).
            var parts: [(event: DPEvent, count: Int)] = []
            var place: [DPEvent: Int] = [:]
            for e in events.map(\.simplified) where e != .noOp {
                let (base, count): (DPEvent, Int)
                if case .selfComposed(let inner, let n) = e { (base, count) = (inner, n) } else { (base, count) = (e, 1) }
                if let i = place[base] { parts[i].count += count } else { place[base] = parts.count; parts.append((base, count)) }
            }
            let merged = parts.map { $0.count == 1 ? $0.event : .selfComposed(event: $0.event, count: $0.count) }
            if merged.isEmpty { return .noOp }
            return merged.count == 1 ? merged[0] : .composed(merged)
        case .poissonSampled(let q, let inner):
            return .poissonSampled(samplingProbability: q, event: inner.simplified)
        default:
            return self
        }
    }
}
