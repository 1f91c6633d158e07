import Foundation

/// A discretised privacy loss distribution: mass `probs[i]` at loss (lowerLoss + i)·interval, plus
/// mass at +∞. Pessimistic throughout: every rounding and truncation can only raise δ(ε).
struct PLDPmf: Sendable, Equatable {
    /// The most grid points a distribution or an FFT may use (2²⁴: 128 MiB per array), so an
    /// extreme event is refused with advice instead of exhausting memory.
    static let maxPoints = 1 << 24

    static func checkSize(_ points: Double) throws {
        try PrivacyError.require(points <= Double(maxPoints), "event",
                                 "its privacy loss distribution would need \(points.formatted(.number.notation(.scientific).precision(.significantDigits(2)))) grid points (at most \(maxPoints) are allowed); use the RDP accountant for this event")
    }

    var interval: Double
    var lowerLoss: Int
    var probs: [Double]
    var infinityMass: Double

    /// The distribution of a mechanism that reveals nothing.
    static func identity(interval: Double) -> PLDPmf {
        PLDPmf(interval: interval, lowerLoss: 0, probs: [1], infinityMass: 0)
    }

    /// Composition of two mechanisms: the convolution of their losses, tails truncated.
    func composed(with other: PLDPmf, tailMassTruncation: Double) throws -> PLDPmf {
        precondition(interval == other.interval)
        if other.probs.count == 1 && other.infinityMass == 0 && other.probs[0] == 1 {
            return PLDPmf(interval: interval, lowerLoss: lowerLoss + other.lowerLoss, probs: probs, infinityMass: infinityMass)
        }
        if probs.count == 1 && infinityMass == 0 && probs[0] == 1 {
            return PLDPmf(interval: interval, lowerLoss: lowerLoss + other.lowerLoss, probs: other.probs, infinityMass: other.infinityMass)
        }
        try Self.checkSize(Double(probs.count + other.probs.count))
        let conv = FFT.convolve(probs, other.probs)
        let inf = infinityMass + other.infinityMass - infinityMass * other.infinityMass
        let (offset, kept, rightMass) = Self.truncateTails(conv, tailMassTruncation)
        return PLDPmf(interval: interval, lowerLoss: lowerLoss + other.lowerLoss + offset,
                      probs: kept, infinityMass: inf + rightMass)
    }

    /// The mechanism run `times` times: one FFT, raised to the power, inverted, on a range chosen by
    /// a Chernoff bound so that at most `tailMassTruncation` falls outside (and is counted at +∞).
    func selfComposed(_ times: Int, tailMassTruncation: Double) throws -> PLDPmf {
        precondition(times >= 1)
        if times == 1 { return self }
        let (lowBound, highBound) = Self.selfConvolveBounds(probs, times: times, tailMassTruncation: tailMassTruncation)
        let outLen = highBound - lowBound + 1
        try Self.checkSize(Double(max(outLen, probs.count)))
        let length = FFT.size(atLeast: max(outLen, probs.count))
        let cyclic = FFT.selfConvolve(probs, times: times, length: length)
        var out = Array(repeating: 0.0, count: outLen)
        for k in 0..<outLen { out[k] = cyclic[(k + lowBound) % length] }
        let inf = tailMassTruncation - expm1(Double(times) * log1p(-infinityMass))
        return PLDPmf(interval: interval, lowerLoss: lowerLoss * times + lowBound, probs: out, infinityMass: inf)
    }

    /// δ(ε) = P[∞] + Σ_{loss > ε} p·(1 − e^{ε − loss}).
    func delta(epsilon: Double) -> Double {
        var d = infinityMass
        for (i, p) in probs.enumerated() {
            let loss = Double(lowerLoss + i) * interval
            if loss > epsilon { d += -expm1(epsilon - loss) * p }
        }
        return d
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ delta (∞ when the mass at +∞ alone exceeds delta).
    func epsilon(delta: Double) -> Double {
        if infinityMass > delta { return .infinity }
        var massUpper = infinityMass, massLower = 0.0
        var i = probs.count - 1
        while i >= 0 {
            let loss = Double(lowerLoss + i) * interval
            if massUpper > delta && massLower > 0 && log((massUpper - delta) / massLower) >= loss { break }
            massUpper += probs[i]
            massLower += exp(-loss) * probs[i]
            if massUpper >= delta && massLower == 0 { return max(0, loss) }
            i -= 1
        }
        if massUpper <= massLower + delta { return 0 }
        return log((massUpper - delta) / massLower)
    }

    /// Drops the longest prefix and suffix each of mass ≤ truncation/2; the prefix mass moves to the
    /// first kept point (rounding losses up), the suffix mass is returned for +∞.
    static func truncateTails(_ probs: [Double], _ truncation: Double) -> (offset: Int, kept: [Double], right: Double) {
        if truncation == 0 || probs.isEmpty { return (0, probs, 0) }
        func prefix(_ seq: some Sequence<Double>) -> Int {
            var s = 0.0, n = 0
            for v in seq { s += v; if s > truncation / 2 { return n }; n += 1 }
            return n
        }
        let left = prefix(probs)
        var right = probs.count - prefix(probs.reversed())
        right = max(right, left + 1)
        let leftMass = probs[..<left].reduce(0, +)
        let rightMass = right < probs.count ? probs[right...].reduce(0, +) : 0
        var kept = Array(probs[left..<min(right, probs.count)])
        if kept.isEmpty { kept = [0] }
        kept[0] += leftMass
        return (left, kept, rightMass)
    }

    /// Chernoff bounds on the support of the `times`-fold convolution (dp-accounting's orders
    /// ±1…±20 divided by the length).
    static func selfConvolveBounds(_ probs: [Double], times: Int, tailMassTruncation: Double) -> (Int, Int) {
        var upper = (probs.count - 1) * times
        var lower = 0
        if tailMassTruncation == 0 { return (lower, upper) }
        let logTerm = log(2 / tailMassTruncation)
        for j in (-20...20) where j != 0 {
            let t = Double(j) / Double(probs.count)
            // Σ p_i e^{t·i}: t·i stays within ±20, so plain sums with an incremental factor are safe.
            let step = exp(t)
            var w = 1.0, total = 0.0
            for p in probs { total += p * w; w *= step }
            guard total > 0 else { continue }
            let bound = (Double(times) * log(total) + logTerm) / t
            guard bound.isFinite else { continue }
            if t > 0 { upper = min(upper, Int(bound.rounded(.up))) }
            else { lower = max(lower, Int(bound.rounded(.down))) }
        }
        return (lower, upper)
    }
}
