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
                    // Tiles of 512 coordinates are first copied from each update in turn (one
                    // sequential stream at a time, which the prefetcher follows; n interleaved
                    // streams it does not), then ordered from cache.
                    let tileBlocks = 64
                    let tile = UnsafeMutablePointer<Float>.allocate(capacity: n * tileBlocks * 8)
                    let scratch = UnsafeMutableBufferPointer<V>.allocate(capacity: n)
                    defer { tile.deallocate(); scratch.deallocate() }
                    let first = w * chunk, last = min(blocks, first + chunk)
                    var t = first
                    while t < last {
                        let tileEnd = min(last, t + tileBlocks)
                        let start = t * 8, width = min(dimension, tileEnd * 8) - start
                        let stride = tileBlocks * 8
                        for i in 0..<n {
                            (tile + i * stride).update(from: inputs[i].base + start, count: width)
                            if width < stride { (tile + i * stride + width).update(repeating: 0, count: stride - width) }
                        }
                        for b in 0..<(tileEnd - t) {
                            for i in 0..<n {
                                scratch[i] = UnsafeRawPointer(tile + i * stride + b * 8).loadUnaligned(as: V.self)
                            }
                            for (i, j) in comparators {
                                // Compare-and-select lowers to vminps/vmaxps; `pointwiseMin` is a per-lane loop.
                                let a = scratch[i], c = scratch[j]
                                scratch[i] = a.replacing(with: c, where: c .< a)
                                scratch[j] = a.replacing(with: c, where: c .> a)
                            }
                            let r = reduce(scratch)
                            let base = start + b * 8
                            let lanes = min(8, dimension - base)
                            if lanes == 8 {
                                UnsafeMutableRawPointer(output.base + base).storeBytes(of: r, as: V.self)
                            } else {
                                for l in 0..<lanes { output.base[base + l] = r[l] }
                            }
                        }
                        t = tileEnd
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
