import FedGateTensors

/// Krum and Multi-Krum (Blanchard et al. 2017): score each update by the summed squared distance to
/// its n − f − 2 nearest others, and keep the m best-scored (m = 1: Krum). Tolerates f Byzantine silos
/// when n ≥ 2f + 3.
public struct MultiKrum: AggregationStrategy {
    public let byzantine: Int
    /// Updates kept (1 = Krum; nil = n − f).
    public let selected: Int?
    public let maximumHeldUpdates: Int?
    public var name: String { selected == 1 ? "krum" : "multi-krum" }

    public init(byzantine f: Int, selected m: Int? = nil, maximumHeldUpdates: Int = 1000) throws {
        guard f >= 0 else { throw AggregationError("Krum: f must be ≥ 0, got \(f)") }
        if let m, m < 1 { throw AggregationError("Multi-Krum: m must be ≥ 1, got \(m)") }
        byzantine = f
        selected = m
        self.maximumHeldUpdates = maximumHeldUpdates
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        try AggregationChecks.held(updates, limit: maximumHeldUpdates, name)
        let keep = try Self.select(updates.map(\.delta), byzantine: byzantine, count: selected ?? (updates.count - byzantine))
        var acc = WeightedAverage(dimension: global.count)
        for i in keep { acc.fold(updates[i].delta, weight: 1) }
        var next = global
        VectorMath.axpy(1, acc.mean, &next)
        let kept = Set(keep)
        return AggregationOutcome(parameters: next, excluded: updates.indices.filter { !kept.contains($0) }.map { updates[$0].silo })
    }

    /// Squared L2 distances between all pairs.
    static func distances(_ deltas: [[Float]]) -> [[Double]] {
        let n = deltas.count
        let norms = deltas.map { VectorMath.sumOfSquares($0) }
        var d = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in (i + 1)..<max(i + 1, n) {
                let v = max(0, norms[i] + norms[j] - 2 * VectorMath.dot(deltas[i], deltas[j]))
                d[i][j] = v; d[j][i] = v
            }
        }
        return d
    }

    /// Indices of the `count` best-scored updates, by iterated Krum on the remaining set.
    static func select(_ deltas: [[Float]], byzantine f: Int, count m: Int) throws -> [Int] {
        let n = deltas.count
        guard n >= 2 * f + 3 else {
            throw AggregationError("Krum needs n ≥ 2f + 3 updates: n = \(n), f = \(f)")
        }
        guard m <= n else { throw AggregationError("Multi-Krum cannot keep \(m) of \(n) updates") }
        let d = distances(deltas)
        let neighbours = n - f - 2
        let scores = (0..<n).map { i -> Double in
            (0..<n).filter { $0 != i }.map { d[i][$0] }.sorted().prefix(neighbours).reduce(0, +)
        }
        return Array((0..<n).sorted { (scores[$0], $0) < (scores[$1], $1) }.prefix(m))
    }
}

/// Bulyan (El Mhamdi et al. 2018): choose θ = n − 2f updates by iterated Krum, then average, per
/// coordinate, the θ − 2f values nearest the median. Runs when n ≥ 4f + 1 (its proof assumes 4f + 3).
public struct Bulyan: AggregationStrategy {
    public let byzantine: Int
    public let maximumHeldUpdates: Int?
    public let name = "bulyan"

    public init(byzantine f: Int, maximumHeldUpdates: Int = 1000) throws {
        guard f >= 0 else { throw AggregationError("Bulyan: f must be ≥ 0, got \(f)") }
        byzantine = f
        self.maximumHeldUpdates = maximumHeldUpdates
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        try AggregationChecks.held(updates, limit: maximumHeldUpdates, name)
        let n = updates.count, f = byzantine
        guard n >= 4 * f + 1 else { throw AggregationError("Bulyan needs n ≥ 4f + 1 updates: n = \(n), f = \(f)") }
        // Iterated Krum: pick the best, remove it, repeat θ times.
        var remaining = Array(updates.indices)
        var chosen: [Int] = []
        let theta = n - 2 * f
        while chosen.count < theta {
            let sub = remaining.map { updates[$0].delta }
            let pick: Int
            if sub.count >= 2 * f + 3 {
                pick = remaining[try MultiKrum.select(sub, byzantine: f, count: 1)[0]]
            } else {
                // Too few left for Krum's rule: take the one closest to the others.
                let d = MultiKrum.distances(sub)
                pick = remaining[(0..<sub.count).min { d[$0].reduce(0, +) < d[$1].reduce(0, +) }!]
            }
            chosen.append(pick)
            remaining.removeAll { $0 == pick }
        }
        let beta = theta - 2 * f
        let ends = Array(0..<f) + Array((f + beta)..<theta)
        let trimmed = CoordinateStatistics.apply(chosen.map { updates[$0].delta }, dimension: global.count, needed: ends) { s in
            CoordinateStatistics.meanOfRange(s, f, f + beta)
        }
        var next = global
        VectorMath.axpy(1, trimmed, &next)
        let kept = Set(chosen)
        return AggregationOutcome(parameters: next, excluded: updates.indices.filter { !kept.contains($0) }.map { updates[$0].silo })
    }
}
