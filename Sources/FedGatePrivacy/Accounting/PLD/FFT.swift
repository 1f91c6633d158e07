import Foundation

/// An in-place radix-2 complex FFT on split real/imaginary arrays, for the PLD convolutions.
struct FFT: Sendable {
    let size: Int
    private let cosTable: [Double]
    private let sinTable: [Double]

    /// A transform of `size` points; `size` must be a power of two.
    init(size: Int) {
        precondition(size > 0 && size & (size - 1) == 0, "FFT size must be a power of two")
        let (c, s) = Self.twiddles(size)
        self.init(size: size, cos: c, sin: s, stride: 1)
    }

    /// A transform whose twiddles cos/sin(2πk/size) are every `stride`-th entry of a larger table.
    init(size: Int, cos c: [Double], sin s: [Double], stride: Int) {
        precondition(size > 0 && size & (size - 1) == 0, "FFT size must be a power of two")
        self.size = size
        let half = max(size / 2, 1)
        cosTable = (0..<half).map { c[$0 * stride] }
        sinTable = (0..<half).map { s[$0 * stride] }
    }

    /// cos and sin of 2πk/n for k = 0 … n/2, from libm on the first quarter turn and by symmetry
    /// on the second.
    static func twiddles(_ n: Int) -> (cos: [Double], sin: [Double]) {
        let half = max(n / 2, 1), quarter = n / 4
        var c = Array(repeating: 0.0, count: half + 1), s = Array(repeating: 0.0, count: half + 1)
        for k in 0...max(quarter, 0) where k <= half {
            let angle = 2 * Double.pi * Double(k) / Double(n)
            c[k] = cos(angle); s[k] = sin(angle)
        }
        if quarter > 0 && quarter < half {
            for k in (quarter + 1)...half {
                // 2πk/n = π/2 + δ: cos = −sin δ, sin = cos δ.
                c[k] = -s[k - quarter]; s[k] = c[k - quarter]
            }
        }
        if n == 2 { c[1] = -1; s[1] = 0 }
        return (c, s)
    }

    /// The smallest power of two ≥ n.
    static func size(atLeast n: Int) -> Int {
        var s = 1
        while s < n { s <<= 1 }
        return s
    }

    /// Forward (e^{−2πi…}) or inverse (unnormalised) transform in place.
    func transform(re: inout [Double], im: inout [Double], inverse: Bool) {
        precondition(re.count == size && im.count == size)
        let n = size
        if n == 1 { return }
        re.withUnsafeMutableBufferPointer { r in
            im.withUnsafeMutableBufferPointer { m in
                Self.bitReverse(r, m)
                let sign: Double = inverse ? 1 : -1
                cosTable.withUnsafeBufferPointer { ct in
                    sinTable.withUnsafeBufferPointer { st in
                        var h = 1
                        if n.trailingZeroBitCount % 2 == 1 {
                            Self.radix2Stage(r, m)
                            h = 2
                        }
                        while h < n {
                            Self.twoStages(r, m, span: h, cos: ct, sin: st, sign: sign)
                            h *= 4
                        }
                    }
                }
            }
        }
    }

    /// The bit-reversal permutation.
    @inline(__always)
    private static func bitReverse(_ r: UnsafeMutableBufferPointer<Double>, _ m: UnsafeMutableBufferPointer<Double>) {
        let n = r.count
        var j = 0
        for i in 1..<n {
            var bit = n >> 1
            while j & bit != 0 { j ^= bit; bit >>= 1 }
            j |= bit
            if i < j { r.swapAt(i, j); m.swapAt(i, j) }
        }
    }

    /// With an odd number of stages: one radix-2 stage (twiddle 1) first.
    @inline(__always)
    private static func radix2Stage(_ r: UnsafeMutableBufferPointer<Double>, _ m: UnsafeMutableBufferPointer<Double>) {
        var p = 0
        while p < r.count {
            let xr = r[p + 1], xi = m[p + 1]
            r[p + 1] = r[p] - xr; m[p + 1] = m[p] - xi
            r[p] += xr; m[p] += xi
            p += 2
        }
    }

    /// Two radix-2 stages (spans h and 2h) in one sweep over memory.
    @inline(__always)
    private static func twoStages(_ r: UnsafeMutableBufferPointer<Double>, _ m: UnsafeMutableBufferPointer<Double>, span h: Int,
                                  cos ct: UnsafeBufferPointer<Double>, sin st: UnsafeBufferPointer<Double>, sign: Double) {
        let n = r.count
        let step = n / (4 * h)
        var start = 0
        while start < n {
            for k in 0..<h {
                let i1 = 2 * k * step, i2 = k * step, i3 = (k + h) * step
                let w1r = ct[i1], w1i = sign * st[i1]
                let w2r = ct[i2], w2i = sign * st[i2]
                let w3r = ct[i3], w3i = sign * st[i3]
                let p0 = start + k, p1 = p0 + h, p2 = p1 + h, p3 = p2 + h
                // Stage of span h: (p0, p1) and (p2, p3), twiddle W_2h^k.
                var tr = r[p1] * w1r - m[p1] * w1i, ti = r[p1] * w1i + m[p1] * w1r
                let a1r = r[p0] - tr, a1i = m[p0] - ti
                let a0r = r[p0] + tr, a0i = m[p0] + ti
                tr = r[p3] * w1r - m[p3] * w1i; ti = r[p3] * w1i + m[p3] * w1r
                let a3r = r[p2] - tr, a3i = m[p2] - ti
                let a2r = r[p2] + tr, a2i = m[p2] + ti
                // Stage of span 2h: (p0, p2) twiddle W_4h^k, (p1, p3) twiddle W_4h^(k+h).
                tr = a2r * w2r - a2i * w2i; ti = a2r * w2i + a2i * w2r
                r[p0] = a0r + tr; m[p0] = a0i + ti
                r[p2] = a0r - tr; m[p2] = a0i - ti
                tr = a3r * w3r - a3i * w3i; ti = a3r * w3i + a3i * w3r
                r[p1] = a1r + tr; m[p1] = a1i + ti
                r[p3] = a1r - tr; m[p3] = a1i - ti
            }
            start += 4 * h
        }
    }
}

/// The FFT of a real sequence of even length N through a complex FFT of N/2 points, giving the
/// N/2 + 1 non-redundant coefficients (the rest are their conjugates).
struct RealFFT: Sendable {
    let size: Int
    private let half: FFT
    private let twiddleCos: [Double]   // cos(2πk/N), k = 0 … N/2
    private let twiddleSin: [Double]   // sin(2πk/N)

    init(size: Int) {
        precondition(size >= 2 && size & (size - 1) == 0, "real FFT size must be a power of two ≥ 2")
        self.size = size
        (twiddleCos, twiddleSin) = FFT.twiddles(size)
        // The half-size transform's twiddles 2πj/(N/2) are the even entries of ours.
        half = FFT(size: size / 2, cos: twiddleCos, sin: twiddleSin, stride: 2)
    }

    /// Coefficients X[0 … N/2] of x (zero-padded to N).
    func forward(_ x: [Double]) -> (re: [Double], im: [Double]) {
        let m = size / 2
        var zr = Array(repeating: 0.0, count: m), zi = Array(repeating: 0.0, count: m)
        for (i, v) in x.enumerated() {
            let j = i % size  // wrap anything longer cyclically
            if j & 1 == 0 { zr[j >> 1] += v } else { zi[j >> 1] += v }
        }
        half.transform(re: &zr, im: &zi, inverse: false)
        var xr = Array(repeating: 0.0, count: m + 1), xi = Array(repeating: 0.0, count: m + 1)
        for k in 0...m {
            let a = k % m, b = (m - k) % m
            // E = (Z[k] + conj Z[m−k]) / 2, O = (Z[k] − conj Z[m−k]) / 2i, X = E + W^k·O.
            let er = (zr[a] + zr[b]) / 2, ei = (zi[a] - zi[b]) / 2
            let or = (zi[a] + zi[b]) / 2, oi = -(zr[a] - zr[b]) / 2
            let wr = twiddleCos[k], wi = -twiddleSin[k]
            xr[k] = er + wr * or - wi * oi
            xi[k] = ei + wr * oi + wi * or
        }
        return (xr, xi)
    }

    /// The real sequence of length N whose coefficients are X[0 … N/2] (normalised inverse).
    func inverse(re xr: [Double], im xi: [Double]) -> [Double] {
        let m = size / 2
        var zr = Array(repeating: 0.0, count: m), zi = Array(repeating: 0.0, count: m)
        for k in 0..<m {
            let j = m - k
            // E = (X[k] + conj X[m−k]) / 2, O = (X[k] − conj X[m−k])·W^−k / 2, Z = E + i·O.
            let er = (xr[k] + xr[j]) / 2, ei = (xi[k] - xi[j]) / 2
            let dr = (xr[k] - xr[j]) / 2, di = (xi[k] + xi[j]) / 2
            let wr = twiddleCos[k], wi = twiddleSin[k]
            let or = dr * wr - di * wi, oi = dr * wi + di * wr
            zr[k] = er - oi
            zi[k] = ei + or
        }
        half.transform(re: &zr, im: &zi, inverse: true)
        let scale = 1 / Double(m)
        var out = Array(repeating: 0.0, count: size)
        for n in 0..<m {
            out[2 * n] = zr[n] * scale
            out[2 * n + 1] = zi[n] * scale
        }
        return out
    }
}

extension FFT {
    /// Linear convolution of two real sequences.
    static func convolve(_ a: [Double], _ b: [Double]) -> [Double] {
        let outLen = a.count + b.count - 1
        if min(a.count, b.count) <= 64 || a.count * b.count <= 4096 {
            var out = Array(repeating: 0.0, count: outLen)
            let (short, long) = a.count <= b.count ? (a, b) : (b, a)
            for (i, x) in short.enumerated() where x != 0 { for (j, y) in long.enumerated() { out[i + j] += x * y } }
            return out
        }
        let fft = RealFFT(size: max(2, size(atLeast: outLen)))
        var (ar, ai) = fft.forward(a)
        let (br, bi) = fft.forward(b)
        for k in ar.indices {
            let r = ar[k] * br[k] - ai[k] * bi[k]
            ai[k] = ar[k] * bi[k] + ai[k] * br[k]
            ar[k] = r
        }
        return Array(fft.inverse(re: ar, im: ai).prefix(outLen))
    }

    /// The sequence convolved with itself `times` times, cyclically on `length` points (a power of
    /// two ≥ 2), by raising its transform to the power `times` (by repeated squaring: no libm calls).
    static func selfConvolve(_ a: [Double], times: Int, length: Int) -> [Double] {
        let fft = RealFFT(size: max(2, length))
        var (re, im) = fft.forward(a)
        // |X|^times underflows to 0 below this modulus²; skip those coefficients outright.
        let negligible = exp(-1490 / Double(times))
        for k in re.indices {
            var br = re[k], bi = im[k]      // base
            if br * br + bi * bi < negligible { re[k] = 0; im[k] = 0; continue }
            var rr = 1.0, ri = 0.0          // result
            var e = times
            while e > 0 {
                if e & 1 == 1 { (rr, ri) = (rr * br - ri * bi, rr * bi + ri * br) }
                e >>= 1
                if e > 0 { (br, bi) = (br * br - bi * bi, 2 * br * bi) }
            }
            re[k] = rr; im[k] = ri
        }
        return Array(fft.inverse(re: re, im: im).prefix(length))
    }
}
