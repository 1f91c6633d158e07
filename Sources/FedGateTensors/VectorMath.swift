/// Flat float-vector kernels over whole buffers with SIMD, shared by the privacy core, the trainers
/// and the aggregators. Sums accumulate in Float within short blocks and in Double across blocks,
/// so a 10⁷-element norm keeps ~1e-7 relative accuracy (a plain Float accumulator is 0.5 % off).
public enum VectorMath {
    public typealias Lane = SIMD16<Float>
    static let laneWidth = Lane.scalarCount
    /// Elements per Float-accumulated block before the partial sum moves to Double.
    static let blockLength = 4096

    /// Σ xᵢ².
    public static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress else { return 0 }
        let raw = UnsafeRawPointer(base)
        var total = 0.0
        var i = 0
        let n = x.count
        while i < n {
            let end = min(i + blockLength, n)
            var a0 = Lane(), a1 = Lane(), a2 = Lane(), a3 = Lane()
            while i + 4 * laneWidth <= end {
                let stride = MemoryLayout<Float>.stride
                let v0 = raw.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
                let v1 = raw.loadUnaligned(fromByteOffset: (i + laneWidth) * stride, as: Lane.self)
                let v2 = raw.loadUnaligned(fromByteOffset: (i + 2 * laneWidth) * stride, as: Lane.self)
                let v3 = raw.loadUnaligned(fromByteOffset: (i + 3 * laneWidth) * stride, as: Lane.self)
                a0 += v0 * v0; a1 += v1 * v1; a2 += v2 * v2; a3 += v3 * v3
                i += 4 * laneWidth
            }
            var block = Double(((a0 + a1) + (a2 + a3)).sum())
            while i < end { block += Double(x[i]) * Double(x[i]); i += 1 }
            total += block
        }
        return total
    }

    /// Σ xᵢyᵢ.
    public static func dot(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) -> Double {
        precondition(x.count == y.count, "dot: lengths differ (\(x.count) vs \(y.count))")
        guard let bx = x.baseAddress, let by = y.baseAddress else { return 0 }
        let rx = UnsafeRawPointer(bx), ry = UnsafeRawPointer(by)
        let stride = MemoryLayout<Float>.stride
        var total = 0.0
        var i = 0
        let n = x.count
        while i < n {
            let end = min(i + blockLength, n)
            var a0 = Lane(), a1 = Lane()
            while i + 2 * laneWidth <= end {
                let x0 = rx.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
                let y0 = ry.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
                let x1 = rx.loadUnaligned(fromByteOffset: (i + laneWidth) * stride, as: Lane.self)
                let y1 = ry.loadUnaligned(fromByteOffset: (i + laneWidth) * stride, as: Lane.self)
                a0 += x0 * y0; a1 += x1 * y1
                i += 2 * laneWidth
            }
            var block = Double((a0 + a1).sum())
            while i < end { block += Double(x[i]) * Double(y[i]); i += 1 }
            total += block
        }
        return total
    }

    /// xᵢ ← c·xᵢ.
    public static func scale(_ x: UnsafeMutableBufferPointer<Float>, by c: Float) {
        guard let base = x.baseAddress else { return }
        let raw = UnsafeMutableRawPointer(base)
        let stride = MemoryLayout<Float>.stride
        let cv = Lane(repeating: c)
        var i = 0
        while i + laneWidth <= x.count {
            let v = raw.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
            raw.storeBytes(of: v * cv, toByteOffset: i * stride, as: Lane.self)
            i += laneWidth
        }
        while i < x.count { x[i] *= c; i += 1 }
    }

    /// yᵢ ← yᵢ + a·xᵢ.
    public static func axpy(_ a: Float, _ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count == y.count, "axpy: lengths differ (\(x.count) vs \(y.count))")
        guard let bx = x.baseAddress, let by = y.baseAddress else { return }
        let rx = UnsafeRawPointer(bx), ry = UnsafeMutableRawPointer(by)
        let stride = MemoryLayout<Float>.stride
        let av = Lane(repeating: a)
        var i = 0
        while i + laneWidth <= x.count {
            let xv = rx.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
            let yv = ry.loadUnaligned(fromByteOffset: i * stride, as: Lane.self)
            ry.storeBytes(of: yv + av * xv, toByteOffset: i * stride, as: Lane.self)
            i += laneWidth
        }
        while i < x.count { y[i] += a * x[i]; i += 1 }
    }
}

extension VectorMath {
    /// Σ xᵢ² of an array.
    public static func sumOfSquares(_ x: [Float]) -> Double { x.withUnsafeBufferPointer { sumOfSquares($0) } }
    /// The L2 norm of an array.
    public static func l2Norm(_ x: [Float]) -> Double { sumOfSquares(x).squareRoot() }
    /// Σ xᵢyᵢ of two arrays of equal length.
    public static func dot(_ x: [Float], _ y: [Float]) -> Double {
        x.withUnsafeBufferPointer { bx in y.withUnsafeBufferPointer { by in dot(bx, by) } }
    }
    /// Scales an array in place.
    public static func scale(_ x: inout [Float], by c: Float) { x.withUnsafeMutableBufferPointer { scale($0, by: c) } }
    /// y += a·x for arrays of equal length.
    public static func axpy(_ a: Float, _ x: [Float], _ y: inout [Float]) {
        x.withUnsafeBufferPointer { bx in y.withUnsafeMutableBufferPointer { axpy(a, bx, $0) } }
    }
    /// x − y, element by element.
    public static func difference(_ x: [Float], _ y: [Float]) -> [Float] {
        var out = x
        axpy(-1, y, &out)
        return out
    }
}
