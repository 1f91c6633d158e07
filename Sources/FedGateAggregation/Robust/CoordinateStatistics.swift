import Dispatch

/// Coordinate-wise order statistics over n updates with SIMD across coordinates: eight coordinates
/// at a time, the n values of each lane are sorted by an odd–even transposition network of
/// min/max operations (no branches), then reduced. Both cores share the coordinates.
enum CoordinateStatistics {
    typealias V = SIMD8<Float>

    /// out[k] = reduce(sorted values of coordinate k), where `reduce` sees the sorted lanes.
    static func apply(_ updates: [[Float]], dimension: Int, reduce: @escaping @Sendable (UnsafeMutableBufferPointer<V>) -> V) -> [Float] {
        let n = updates.count
        var out = [Float](repeating: 0, count: dimension)
        let blocks = (dimension + 7) / 8
        let workers = blocks >= 4096 ? 2 : 1
        let chunk = (blocks + workers - 1) / workers
        out.withUnsafeMutableBufferPointer { outBuffer in
            let output = SendablePointer(base: outBuffer.baseAddress!)
            let inputs = updates.map { u in u.withUnsafeBufferPointer { SendablePointer(base: UnsafeMutablePointer(mutating: $0.baseAddress!)) } }
            // The arrays outlive the concurrent loop below; their storage is not moved while we read.
            withExtendedLifetime(updates) {
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    let scratch = UnsafeMutableBufferPointer<V>.allocate(capacity: n)
                    defer { scratch.deallocate() }
                    let first = w * chunk, last = min(blocks, first + chunk)
                    if first >= last { return }
                    for b in first..<last {
                        let base = b * 8
                        let lanes = min(8, dimension - base)
                        for i in 0..<n {
                            if lanes == 8 {
                                scratch[i] = UnsafeRawPointer(inputs[i].base + base).loadUnaligned(as: V.self)
                            } else {
                                var v = V()
                                for l in 0..<lanes { v[l] = inputs[i].base[base + l] }
                                scratch[i] = v
                            }
                        }
                        sort(scratch)
                        let r = reduce(scratch)
                        for l in 0..<lanes { output.base[base + l] = r[l] }
                    }
                }
            }
        }
        return out
    }

    /// Odd–even transposition sort of each lane across the n vectors.
    @inline(__always)
    static func sort(_ v: UnsafeMutableBufferPointer<V>) {
        let n = v.count
        for round in 0..<n {
            var i = round & 1
            while i + 1 < n {
                let a = v[i], b = v[i + 1]
                v[i] = pointwiseMin(a, b)
                v[i + 1] = pointwiseMax(a, b)
                i += 2
            }
        }
    }

    /// The mean of sorted lanes from `low` to `high` (exclusive).
    @inline(__always)
    static func meanOfRange(_ v: UnsafeMutableBufferPointer<V>, _ low: Int, _ high: Int) -> V {
        var s = V()
        for i in low..<high { s += v[i] }
        return s / V(repeating: Float(high - low))
    }
}

/// A pointer handed to concurrent workers that write disjoint ranges.
struct SendablePointer: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
}
