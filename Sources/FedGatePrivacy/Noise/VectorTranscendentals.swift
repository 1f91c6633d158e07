/// Vectorised log and sin/cos for the Box–Muller transform, in Float SIMD lanes. Swift's SIMD types
/// have no transcendental functions, and calling libm per lane would leave the hot path scalar.
///
/// Accuracy (checked by the tests over dense grids against Foundation's Double functions):
/// `log` on (0, 1]: error ≤ 2e-7 + 1.2e-7·|log x| (about one Float ulp);
/// `sqrt`: relative error ≤ 3e-7;
/// `sinCosTwoPi`: absolute error ≤ 5e-7 on the whole circle (measured 4.4e-7).
public enum VectorTranscendentals {
    public typealias V = SIMD8<Float>

    /// a·b + c, fused where the build targets FMA hardware (else `addingProduct` would be a
    /// library call per lane).
    @inline(__always)
    static func fma(_ a: V, _ b: V, _ c: V) -> V {
        #if FEDGATE_FMA
        return c.addingProduct(a, b)
        #else
        return a * b + c
        #endif
    }

    /// Natural log for positive, finite, normal lanes. The reduction is done on the bits (no
    /// compares or selects, which Swift lowers lane by lane): adding 1 − √½ in bit space puts the
    /// mantissa m in [√½, √2) and its exponent in e; then log(1 + f), f = m − 1, is a degree-9
    /// polynomial (Cephes' `logf` coefficients), with ln 2 split in two so e·ln 2 stays exact.
    @inline(__always)
    public static func log(_ x: V) -> V {
        let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self) &+ (0x3f80_0000 - 0x3f35_04f3)
        let e = V(SIMD8<Int32>(truncatingIfNeeded: bits &>> 23) &- 127)
        let f = unsafeBitCast((bits & 0x007f_ffff) &+ 0x3f35_04f3, to: V.self) - 1
        let z = f * f
        var y = V(repeating: 7.0376836292e-2)
        y = fma(y, f, V(repeating: -1.1514610310e-1))
        y = fma(y, f, V(repeating: 1.1676998740e-1))
        y = fma(y, f, V(repeating: -1.2420140846e-1))
        y = fma(y, f, V(repeating: 1.4249322787e-1))
        y = fma(y, f, V(repeating: -1.6668057665e-1))
        y = fma(y, f, V(repeating: 2.0000714765e-1))
        y = fma(y, f, V(repeating: -2.4999993993e-1))
        y = fma(y, f, V(repeating: 3.3333331174e-1))
        y = y * f * z
        y = y + e * V(repeating: -2.12194440e-4) - z * 0.5
        return f + y + e * V(repeating: 0.693359375)
    }

    /// √x for finite x ≥ 0, by the bit-trick reciprocal square root and three Newton steps
    /// (Swift's SIMD `squareRoot()` calls `sqrtf` once per lane). Relative error ≤ 3e-7; √0 = 0.
    @inline(__always)
    public static func sqrt(_ x: V) -> V {
        let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self)
        var y = unsafeBitCast(SIMD8<UInt32>(repeating: 0x5f37_5a86) &- (bits &>> 1), to: V.self)
        let half = x * 0.5
        y = y * (V(repeating: 1.5) - half * y * y)
        y = y * (V(repeating: 1.5) - half * y * y)
        y = y * (V(repeating: 1.5) - half * y * y)
        return x * y
    }

    /// sin and cos of 2π(u − ½) for u in [0, 1): the half angle y = π(u − ½) lies in [−π/2, π/2),
    /// where Taylor series to y¹³ / y¹⁴ are accurate to 1e-8; then sin = 2·s·c, cos = c² − s².
    @inline(__always)
    public static func sinCosTwoPi(_ u: V) -> (sin: V, cos: V) {
        let y = (u - 0.5) * V(repeating: 3.14159265358979)
        let y2 = y * y
        var ps = V(repeating: 1.0 / 6_227_020_800)
        ps = fma(ps, y2, V(repeating: -1.0 / 39_916_800))
        ps = fma(ps, y2, V(repeating: 1.0 / 362_880))
        ps = fma(ps, y2, V(repeating: -1.0 / 5040))
        ps = fma(ps, y2, V(repeating: 1.0 / 120))
        ps = fma(ps, y2, V(repeating: -1.0 / 6))
        ps = fma(ps, y2, V(repeating: 1))
        let s = y * ps
        var pc = V(repeating: Float(-1.0 / 87_178_291_200.0 as Double))
        pc = fma(pc, y2, V(repeating: 1.0 / 479_001_600))
        pc = fma(pc, y2, V(repeating: -1.0 / 3_628_800))
        pc = fma(pc, y2, V(repeating: 1.0 / 40320))
        pc = fma(pc, y2, V(repeating: -1.0 / 720))
        pc = fma(pc, y2, V(repeating: 1.0 / 24))
        pc = fma(pc, y2, V(repeating: -0.5))
        pc = fma(pc, y2, V(repeating: 1))
        let c = pc
        return (2 * s * c, c * c - s * s)
    }
}
