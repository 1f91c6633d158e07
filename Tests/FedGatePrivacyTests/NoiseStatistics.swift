import Foundation

/// Goodness-of-fit checks for standard normal samples. Each returns whether the sample passes at a
/// false-alarm rate below ~1e-6 per check, so the suite is stable yet catches a 10 % scale error.
struct NormalFit {
    let n: Int
    let mean: Double
    let variance: Double
    let ks: Double
    let beyond3: Int
    let beyond4: Int
    let lag1: Double
    let lag8: Double
    let squaresLag8: Double

    init(_ z: [Float]) {
        n = z.count
        let d = z.map(Double.init)
        let m = d.reduce(0, +) / Double(d.count)
        mean = m
        variance = d.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(d.count - 1)
        let sorted = d.sorted()
        var worst = 0.0
        for (i, x) in sorted.enumerated() {
            let cdf = 0.5 * erfc(-x / 2.0.squareRoot())
            worst = max(worst, abs(cdf - Double(i) / Double(n)), abs(Double(i + 1) / Double(n) - cdf))
        }
        ks = worst
        beyond3 = d.filter { abs($0) > 3 }.count
        beyond4 = d.filter { abs($0) > 4 }.count
        func corr(_ a: [Double], lag: Int) -> Double {
            let m = a.reduce(0, +) / Double(a.count)
            var num = 0.0, den = 0.0
            for i in 0..<(a.count - lag) { num += (a[i] - m) * (a[i + lag] - m) }
            for x in a { den += (x - m) * (x - m) }
            return num / den
        }
        lag1 = corr(d, lag: 1)
        lag8 = corr(d, lag: 8)  // Box–Muller partners sit 8 apart in our layout
        squaresLag8 = corr(d.map { $0 * $0 }, lag: 8)
    }

    var se: Double { 1 / Double(n).squareRoot() }
    var meanOK: Bool { abs(mean) < 5 * se }
    var varianceOK: Bool { abs(variance - 1) < 5 * 2.0.squareRoot() * se }
    /// Kolmogorov–Smirnov at α = 1e-6: D < sqrt(−ln(α/2)/2n).
    var ksOK: Bool { ks < (-log(0.5e-6) / 2 / Double(n)).squareRoot() }
    var tailsOK: Bool {
        let p3 = 0.0026997960632601866, p4 = 6.334248366623996e-05
        let e3 = p3 * Double(n), e4 = p4 * Double(n)
        return abs(Double(beyond3) - e3) < 5 * e3.squareRoot() && abs(Double(beyond4) - e4) < 5 * e4.squareRoot() + 3
    }
    var independenceOK: Bool { abs(lag1) < 5 * se && abs(lag8) < 5 * se && abs(squaresLag8) < 5 * se }
    var allOK: Bool { meanOK && varianceOK && ksOK && tailsOK && independenceOK }
}
