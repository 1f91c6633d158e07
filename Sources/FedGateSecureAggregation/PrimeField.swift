/// Arithmetic modulo the Mersenne prime p = 2⁶¹ − 1, the field Shamir shares live in.
enum PrimeField {
    static let p: UInt64 = (1 << 61) - 1

    @inline(__always)
    static func reduce(_ x: UInt64) -> UInt64 {
        let r = (x & p) + (x >> 61)
        return r >= p ? r - p : r
    }

    @inline(__always)
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 { reduce(a + b) }

    @inline(__always)
    static func sub(_ a: UInt64, _ b: UInt64) -> UInt64 { reduce(a + p - b) }

    @inline(__always)
    static func mul(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (hi, lo) = a.multipliedFullWidth(by: b)
        // a·b = hi·2⁶⁴ + lo = (hi·8 + lo >> 61)·2⁶¹ + (lo & p) ≡ hi·8 + lo >> 61 + lo & p.
        return reduce(reduce((hi << 3) | (lo >> 61)) + (lo & p))
    }

    static func pow(_ a: UInt64, _ e: UInt64) -> UInt64 {
        var result: UInt64 = 1, base = a, e = e
        while e > 0 {
            if e & 1 == 1 { result = mul(result, base) }
            base = mul(base, base)
            e >>= 1
        }
        return result
    }

    /// a⁻¹ by Fermat (a ≠ 0).
    static func inverse(_ a: UInt64) -> UInt64 { pow(a, p - 2) }

    /// A uniform field element from the system CSPRNG.
    static func random(using rng: inout some RandomNumberGenerator) -> UInt64 {
        while true {
            let x = rng.next() & ((1 << 61) - 1)
            if x < p { return x }
        }
    }
}
