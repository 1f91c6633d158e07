import Foundation

/// An in-place radix-2 complex FFT on split real/imaginary arrays, for the PLD convolutions.
struct FFT: Sendable {
    let size: Int
    private let cosTable: [Double]
    private let sinTable: [Double]

    /// A transform of `size` points; `size` must be a power of two.
    init(size: Int) {
        precondition(size > 0 && size & (size - 1) == 0, "FFT size must be a power of two")
        self.size = size
        let half = max(size / 2, 1)
        cosTable = (0..<half).map { cos(2 * Double.pi * Double($0) / Double(size)) }
        sinTable = (0..<half).map { sin(2 * Double.pi * Double($0) / Double(size)) }
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
                // Bit-reversal permutation.
                var j = 0
                for i in 1..<n {
                    var bit = n >> 1
                    while j & bit != 0 { j ^= bit; bit >>= 1 }
                    j |= bit
                    if i < j { r.swapAt(i, j); m.swapAt(i, j) }
                }
                let sign: Double = inverse ? 1 : -1
                cosTable.withUnsafeBufferPointer { ct in
                    sinTable.withUnsafeBufferPointer { st in
                        var len = 2
                        while len <= n {
                            let halfLen = len / 2
                            let stride = n / len
                            var start = 0
                            while start < n {
                                var k = 0
                                for p in start..<(start + halfLen) {
                                    let wr = ct[k], wi = sign * st[k]
                                    let q = p + halfLen
                                    let xr = r[q] * wr - m[q] * wi
                                    let xi = r[q] * wi + m[q] * wr
                                    r[q] = r[p] - xr; m[q] = m[p] - xi
                                    r[p] += xr; m[p] += xi
                                    k += stride
                                }
                                start += len
                            }
                            len <<= 1
                        }
                    }
                }
            }
        }
    }
}

extension FFT {
    /// Linear convolution of two real sequences.
    static func convolve(_ a: [Double], _ b: [Double]) -> [Double] {
        let outLen = a.count + b.count - 1
        if a.count * b.count <= 4096 {
            var out = Array(repeating: 0.0, count: outLen)
            for (i, x) in a.enumerated() where x != 0 { for (j, y) in b.enumerated() { out[i + j] += x * y } }
            return out
        }
        let fft = FFT(size: size(atLeast: outLen))
        var ar = a + Array(repeating: 0, count: fft.size - a.count), ai = Array(repeating: 0.0, count: fft.size)
        var br = b + Array(repeating: 0, count: fft.size - b.count), bi = Array(repeating: 0.0, count: fft.size)
        fft.transform(re: &ar, im: &ai, inverse: false)
        fft.transform(re: &br, im: &bi, inverse: false)
        for k in 0..<fft.size {
            let r = ar[k] * br[k] - ai[k] * bi[k]
            let i = ar[k] * bi[k] + ai[k] * br[k]
            ar[k] = r; ai[k] = i
        }
        fft.transform(re: &ar, im: &ai, inverse: true)
        let scale = 1 / Double(fft.size)
        return (0..<outLen).map { ar[$0] * scale }
    }

    /// The sequence convolved with itself `times` times, cyclically on `length` points (a power of
    /// two), by raising its transform to the power `times`.
    static func selfConvolve(_ a: [Double], times: Int, length: Int) -> [Double] {
        let fft = FFT(size: length)
        var re = Array(repeating: 0.0, count: length), im = Array(repeating: 0.0, count: length)
        for (i, x) in a.enumerated() { re[i % length] += x }
        fft.transform(re: &re, im: &im, inverse: false)
        let n = Double(times)
        for k in 0..<length {
            let modulus = (re[k] * re[k] + im[k] * im[k]).squareRoot()
            if modulus == 0 { re[k] = 0; im[k] = 0; continue }
            let mag = Foundation.exp(n * Foundation.log(modulus))
            let angle = n * atan2(im[k], re[k])
            re[k] = mag * cos(angle); im[k] = mag * sin(angle)
        }
        fft.transform(re: &re, im: &im, inverse: true)
        let scale = 1 / Double(length)
        for k in 0..<length { re[k] *= scale }
        return re
    }
}
