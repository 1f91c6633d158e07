import FedGateTensors

/// Coordinate-wise median of the updates (Yin et al. 2018).
public struct CoordinateMedian: AggregationStrategy {
    public let name = "median"
    public let maximumHeldUpdates: Int?

    public init(maximumHeldUpdates: Int = 1000) { self.maximumHeldUpdates = maximumHeldUpdates }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        try AggregationChecks.held(updates, limit: maximumHeldUpdates, name)
        let n = updates.count
        let middle = n % 2 == 1 ? [n / 2] : [n / 2 - 1, n / 2]
        let median = CoordinateStatistics.apply(updates.map(\.delta), dimension: global.count, needed: middle) { s in
            n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) * 0.5
        }
        var next = global
        VectorMath.axpy(1, median, &next)
        return AggregationOutcome(parameters: next)
    }
}

/// Coordinate-wise trimmed mean: drop the ⌊β·n⌋ largest and smallest values of each coordinate,
/// average the rest (Yin et al. 2018).
public struct TrimmedMean: AggregationStrategy {
    public var name: String { "trimmed-mean" }
    public let beta: Double
    public let maximumHeldUpdates: Int?

    public init(beta: Double, maximumHeldUpdates: Int = 1000) throws {
        guard beta >= 0, beta < 0.5 else { throw AggregationError("trimmed mean: β must be in [0, 0.5), got \(beta)") }
        self.beta = beta
        self.maximumHeldUpdates = maximumHeldUpdates
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        try AggregationChecks.held(updates, limit: maximumHeldUpdates, name)
        let n = updates.count
        let trim = Int(beta * Double(n))
        // The middle values' order does not matter, only which they are: the network need only
        // settle the trimmed positions at both ends.
        let ends = Array(0..<trim) + Array((n - trim)..<n)
        let mean = CoordinateStatistics.apply(updates.map(\.delta), dimension: global.count, needed: ends) { s in
            CoordinateStatistics.meanOfRange(s, trim, n - trim)
        }
        var next = global
        VectorMath.axpy(1, mean, &next)
        return AggregationOutcome(parameters: next)
    }
}
