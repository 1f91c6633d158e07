import FedGateTensors

/// A running example-weighted average of updates: fold one in, read the mean. Memory O(model)
/// whatever the number of silos; the sum is kept in Float with SIMD axpy.
public struct WeightedAverage: Sendable {
    private(set) var sum: [Float]
    private(set) var weight: Double = 0
    public private(set) var count = 0

    public init(dimension: Int) { sum = [Float](repeating: 0, count: dimension) }

    /// Adds `weight`·update.
    public mutating func fold(_ delta: [Float], weight w: Double) {
        precondition(delta.count == sum.count, "update length \(delta.count) differs from the model's \(sum.count)")
        VectorMath.axpy(Float(w), delta, &sum)
        weight += w
        count += 1
    }

    /// Adds `weight`·update from a buffer (an update still in its received bytes).
    public mutating func fold(_ delta: UnsafeBufferPointer<Float>, weight w: Double) {
        precondition(delta.count == sum.count, "update length \(delta.count) differs from the model's \(sum.count)")
        sum.withUnsafeMutableBufferPointer { VectorMath.axpy(Float(w), delta, $0) }
        weight += w
        count += 1
    }

    /// The weighted mean, computed in the accumulator's own storage (no copy of a model-sized
    /// array); the accumulator is spent.
    public consuming func takeMean() -> [Float] {
        if weight > 0 { VectorMath.scale(&sum, by: Float(1 / weight)) }
        return sum
    }

    /// The weighted mean so far.
    public var mean: [Float] {
        guard weight > 0 else { return sum }
        var m = sum
        VectorMath.scale(&m, by: Float(1 / weight))
        return m
    }
}

extension WeightedAverage {
    /// The example-weighted mean update of a round, folded in one pass.
    static func meanUpdate(_ updates: [ClientUpdate], dimension: Int) -> [Float] {
        var acc = WeightedAverage(dimension: dimension)
        for u in updates { acc.fold(u.delta, weight: Double(u.examples)) }
        return acc.mean
    }
}
