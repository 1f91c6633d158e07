import Foundation

/// The privacy loss of an additive-noise mechanism (Gaussian or Laplace, sensitivity 1) under
/// Poisson subsampling, for one direction of the add-or-remove-one relation (dp-accounting's
/// REMOVE: upper = (1−q)μ(x) + qμ(x+1), lower = μ(x); ADD: upper = μ(x), lower = (1−q)μ(x) + qμ(x−1)).
struct AdditiveNoiseLoss: Sendable {
    enum Noise: Sendable { case gaussian(sigma: Double), laplace(scale: Double) }
    enum Adjacency: Sendable { case remove, add }

    let noise: Noise
    let q: Double
    let adjacency: Adjacency

    // MARK: the noise distribution μ

    func noiseCDF(_ x: Double) -> Double {
        switch noise {
        case .gaussian(let s): return SpecialFunctions.normalCDF(x / s)
        case .laplace(let b): return x < 0 ? 0.5 * exp(x / b) : 1 - 0.5 * exp(-x / b)
        }
    }

    func noiseLogCDF(_ x: Double) -> Double {
        switch noise {
        case .gaussian(let s): return SpecialFunctions.logNormalCDF(x / s)
        case .laplace(let b): return x < 0 ? SpecialFunctions.logHalf + x / b : log1p(-0.5 * exp(-x / b))
        }
    }

    /// Loss without subsampling: ln μ(x+1)/μ(x) (remove) or ln μ(x−1)/μ(x) (add).
    func lossWithoutSampling(_ x: Double) -> Double {
        switch (noise, adjacency) {
        case (.gaussian(let s), .remove): return (-0.5 - x) / (s * s)
        case (.gaussian(let s), .add): return (0.5 - x) / (s * s)
        case (.laplace(let b), .remove): return (abs(x) - abs(x + 1)) / b
        case (.laplace(let b), .add): return (abs(x - 1) - abs(x)) / b
        }
    }

    /// The largest x whose loss without subsampling is at least `loss`.
    func inverseLossWithoutSampling(_ loss: Double) -> Double {
        switch (noise, adjacency) {
        case (.gaussian(let s), .remove): return -0.5 - loss * s * s
        case (.gaussian(let s), .add): return 0.5 - loss * s * s
        case (.laplace(let b), .remove):
            if loss > 1 / b { return -.infinity }
            if loss <= -1 / b { return .infinity }
            return -0.5 - loss * b / 2
        case (.laplace(let b), .add):
            if loss > 1 / b { return -.infinity }
            if loss <= -1 / b { return .infinity }
            return 0.5 - loss * b / 2
        }
    }

    // MARK: subsampled

    func upperCDF(_ x: Double) -> Double {
        switch adjacency {
        case .add: return noiseCDF(x)
        case .remove: return q == 1 ? noiseCDF(x + 1) : (1 - q) * noiseCDF(x) + q * noiseCDF(x + 1)
        }
    }

    func lowerLogCDF(_ x: Double) -> Double {
        switch adjacency {
        case .remove: return noiseLogCDF(x)
        case .add:
            if q == 1 { return noiseLogCDF(x - 1) }
            return SpecialFunctions.logAdd(log1p(-q) + noiseLogCDF(x), log(q) + noiseLogCDF(x - 1))
        }
    }

    func loss(_ x: Double) -> Double {
        let l0 = lossWithoutSampling(x)
        if q == 1 { return l0 }
        switch adjacency {
        case .remove: return Self.logATimesExpBPlusC(q, l0, 1 - q)
        case .add: return -Self.logATimesExpBPlusC(q, -l0, 1 - q)
        }
    }

    func inverseLoss(_ loss: Double) -> Double {
        if q == 1 { return inverseLossWithoutSampling(loss) }
        switch adjacency {
        case .remove:
            let floor = log1p(-q)
            if Self.isClose(loss, floor) || loss <= floor { return inverseLossWithoutSampling(-.infinity) }
            return inverseLossWithoutSampling(Self.logATimesExpBPlusC(1 / q, loss, 1 - 1 / q))
        case .add:
            let ceiling = -log1p(-q)
            if Self.isClose(loss, ceiling) || loss >= ceiling { return inverseLossWithoutSampling(.infinity) }
            return inverseLossWithoutSampling(-Self.logATimesExpBPlusC(1 / q, -loss, 1 - 1 / q))
        }
    }

    /// The exact hockey-stick divergence δ(ε) of the (continuous) mechanism.
    func delta(epsilon: Double) -> Double {
        var d: Double
        let useInverse: Bool
        switch adjacency {
        case .add: useInverse = q == 1 || epsilon < -log1p(-q)
        case .remove: useInverse = q == 1 || epsilon > log1p(-q)
        }
        if useInverse {
            let x = inverseLoss(epsilon)
            if x == .infinity { d = 1 - exp(epsilon) } else if x == -.infinity { d = 0 } else {
                d = upperCDF(x) - exp(epsilon + lowerLogCDF(x))
            }
        } else {
            d = adjacency == .remove ? -expm1(epsilon) : 0
        }
        return min(max(d, 0), 1)
    }

    /// The range of losses the connect-the-dots grid must cover: the losses at the points beyond
    /// which μ has mass below ½·e^{−50} on each side.
    func connectDotsBounds() -> (lower: Double, upper: Double) {
        switch noise {
        case .gaussian(let s):
            var lowerX = s * Self.standardNormalQuantileOfLog(SpecialFunctions.logHalf - 50)
            var upperX = -lowerX
            if adjacency == .add { upperX += 1 } else { lowerX -= 1 }
            return (loss(upperX), loss(lowerX))
        case .laplace(let b):
            let m = 1 / b
            if q == 1 { return (-m, m) }
            switch adjacency {
            case .add: return (-log(1 - q + q * exp(m)), -log(1 - q + q * exp(-m)))
            case .remove: return (log(1 - q + q * exp(-m)), log(1 - q + q * exp(m)))
            }
        }
    }

    /// The pessimistic connect-the-dots discretisation (Doroshenko et al. 2022, Alg. 1) on the grid
    /// of multiples of `interval`.
    func connectDotsPmf(interval: Double) throws -> PLDPmf {
        let bounds = connectDotsBounds()
        let loScaled = (bounds.lower / interval).rounded(.down), hiScaled = (bounds.upper / interval).rounded(.up)
        try PLDPmf.checkSize(hiScaled - loScaled + 1)
        let lo = Int(loScaled), hi = Int(hiScaled)
        var deltas = (lo...hi).map { delta(epsilon: Double($0) * interval) }
        for k in 1..<max(deltas.count, 1) { deltas[k] = min(deltas[k], deltas[k - 1]) }
        let n = deltas.count
        var probs = Array(repeating: 0.0, count: n)
        if n == 1 {
            probs[0] = 1 - deltas[0]
        } else {
            let em1 = expm1(interval), e = exp(interval), emm1 = expm1(-interval)
            probs[0] = (1 - deltas[0]) + (deltas[1] - deltas[0]) / em1
            if n > 2 {
                for i in 1..<(n - 1) {
                    probs[i] = ((deltas[i + 1] - deltas[i]) - e * (deltas[i] - deltas[i - 1])) / em1
                }
            }
            probs[n - 1] = (deltas[n - 1] - deltas[n - 2]) / emm1
            for i in 0..<n where probs[i] < 0 { probs[i] = 0 }
        }
        return PLDPmf(interval: interval, lowerLoss: lo, probs: probs, infinityMass: deltas[n - 1])
    }

    // MARK: helpers

    /// log(a·e^b + c).
    static func logATimesExpBPlusC(_ a: Double, _ b: Double, _ c: Double) -> Double {
        if a == 0 { return log(c) }
        if a < 0 { return SpecialFunctions.logSub(log(c), log(-a) + b) }
        if b == 0 { return log(a + c) }
        let d = b + log(a)
        if c == 0 { return d }
        if c < 0 { return SpecialFunctions.logSub(d, log(-c)) }
        return SpecialFunctions.logAdd(d, log(c))
    }

    static func isClose(_ a: Double, _ b: Double) -> Bool {
        abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    }

    /// z with log Φ(z) = logP, by bisection (only used for tail bounds).
    static func standardNormalQuantileOfLog(_ logP: Double) -> Double {
        var lo = -40.0, hi = 40.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if SpecialFunctions.logNormalCDF(mid) < logP { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }
}
