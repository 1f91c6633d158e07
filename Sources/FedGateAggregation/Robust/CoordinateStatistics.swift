import Dispatch

/// Coordinate-wise order statistics over n updates with SIMD across coordinates: eight coordinates
/// at a time, the n values of each lane are ordered by Batcher's odd–even merge network of min/max
/// operations (no branches), pruned to the comparators that decide the positions the reduction
/// reads, then reduced. Both cores share the coordinates.
enum CoordinateStatistics {
    typealias V = SIMD8<Float>

    /// Batcher's odd–even merge sort on the next power of two ≥ n, restricted to wires < n (the
    /// missing wires act as +∞, so their comparators are no-ops) and pruned backwards to those that
    /// can affect the `needed` output positions.
    static func network(_ n: Int, needed: some Sequence<Int>) -> [(Int, Int)] {
        var size = 1
        while size < n { size <<= 1 }
        var all: [(Int, Int)] = []
        var p = 1
        while p < size {
            var k = p
            while k >= 1 {
                var j = k % p
                while j + k < size {
                    for i in 0..<min(k, size - j - k) where (i + j) / (2 * p) == (i + j + k) / (2 * p) {
                        if i + j + k < n { all.append((i + j, i + j + k)) }
                    }
                    j += 2 * k
                }
                k /= 2
            }
            p *= 2
        }
        var live = Set(needed)
        var kept: [(Int, Int)] = []
        for c in all.reversed() where live.contains(c.0) || live.contains(c.1) {
            kept.append(c)
            live.insert(c.0); live.insert(c.1)
        }
        return kept.reversed()
    }

    /// out[k] = reduce(ordered values of coordinate k); `needed` lists the positions `reduce` reads.
    static func apply(_ updates: [[Float]], dimension: Int, needed: some Sequence<Int>,
                      reduce: @escaping @Sendable (UnsafeMutableBufferPointer<V>) -> V) -> [Float] {
        let n = updates.count
        let comparators = network(n, needed: needed)
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
                        for (i, j) in comparators {
                            // Compare-and-select lowers to vminps/vmaxps; `pointwiseMin` is a per-lane loop.
                            let a = scratch[i], b = scratch[j]
                            scratch[i] = a.replacing(with: b, where: b .< a)
                            scratch[j] = a.replacing(with: b, where: b .> a)
                        }
                        let r = reduce(scratch)
                        for l in 0..<lanes { output.base[base + l] = r[l] }
                    }
                }
            }
        }
        return out
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
