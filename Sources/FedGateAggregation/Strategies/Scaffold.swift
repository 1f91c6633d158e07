import FedGateTensors

/// SCAFFOLD's server (Karimireddy et al. 2020): x ← x + η_g·mean(Δy), c ← c + (|S|/N)·mean(Δc).
/// Silos read `control` before training; their control-variate changes arrive with their updates.
public struct ScaffoldServer: Sendable {
    public let globalLearningRate: Float
    public let totalSilos: Int
    public private(set) var control: [Float]

    public init(dimension: Int, totalSilos: Int, globalLearningRate: Float = 1) {
        self.globalLearningRate = globalLearningRate
        self.totalSilos = totalSilos
        control = [Float](repeating: 0, count: dimension)
    }

    /// Applies one round: the parameter updates and the silos' control-variate changes.
    public mutating func aggregate(global: [Float], updates: [ClientUpdate], controlDeltas: [[Float]]) throws -> [Float] {
        try AggregationChecks.nonEmpty(updates, "scaffold")
        var next = global
        VectorMath.axpy(globalLearningRate, WeightedAverage.meanUpdate(updates, dimension: global.count), &next)
        for d in controlDeltas { VectorMath.axpy(1 / Float(totalSilos), d, &control) }
        return next
    }
}
